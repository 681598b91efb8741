package callout

import (
	"time"

	"github.com/nats-io/nats.go"
)

// ActiveConn returns the connection the service answers on, so that a test can break it.
func (s *Service) ActiveConn() *nats.Conn {
	if sess := s.active.Load(); sess != nil {
		return sess.nc
	}
	return nil
}

// ActiveUser returns the nkey the active connection logs in with.
func (s *Service) ActiveUser() string {
	if sess := s.active.Load(); sess != nil {
		return sess.pub
	}
	return ""
}

// SetDownReport sets how long a connection must be down before it is reported; call it
// before Run.
func (s *Service) SetDownReport(d time.Duration) { s.downReport = d }

// UnknownIssuerLogEntries returns how many expected issuers the handler keeps a log time for.
func (h *Handler) UnknownIssuerLogEntries() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.unknownIssuerLogs)
}

// QueuedRequests returns how many received requests wait for a worker.
func (s *Service) QueuedRequests() int { return s.work.len() }
