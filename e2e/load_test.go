//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// connectLoad is workloads connecting over and over, each attempt a fresh connection (so a
// fresh callout) that publishes once to subject and closes. It records every attempt.
type connectLoad struct {
	mu       sync.Mutex
	attempts []attempt
	stop     chan struct{}
	wg       sync.WaitGroup
}

type attempt struct {
	start, end time.Time
	err        error
}

// window is a stretch of time in which connection attempts may fail because of nats-server
// itself: it restarts (until its sidecar has reconnected), or it reloads its configuration
// (which closes connections the callout authorized).
type window struct {
	what     string
	from, to time.Time
}

func startLoad(t *testing.T, url, tok, subject string, workers int) *connectLoad {
	t.Helper()
	l := &connectLoad{stop: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				a := attempt{start: time.Now()}
				var nc *nats.Conn
				nc, a.err = dial(url, nats.Token(tok), nats.Timeout(3*time.Second))
				if a.err == nil {
					if a.err = nc.Publish(subject, nil); a.err == nil {
						a.err = flushErr(nc)
					}
					nc.Close()
				}
				a.end = time.Now()
				l.mu.Lock()
				l.attempts = append(l.attempts, a)
				l.mu.Unlock()
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
			}
		})
	}
	t.Cleanup(l.halt)
	return l
}

func (l *connectLoad) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// waitSuccesses waits until n more attempts, started from now on, have succeeded.
func (l *connectLoad) waitSuccesses(t *testing.T, n int) {
	t.Helper()
	since := time.Now()
	eventually(t, 30*time.Second, fmt.Sprintf("%d successful connections", n), func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		ok := 0
		for _, a := range l.attempts {
			if a.err == nil && !a.start.Before(since) {
				ok++
			}
		}
		if ok < n {
			last := ""
			if len(l.attempts) > 0 {
				last = fmt.Sprintf("; last attempt: %v", l.attempts[len(l.attempts)-1].err)
			}
			return fmt.Errorf("%d so far%s", ok, last)
		}
		return nil
	})
}

// finish stops the load and checks that every attempt succeeded, except those that overlap one
// of the windows.
func (l *connectLoad) finish(t *testing.T, windows ...window) {
	t.Helper()
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	var ok, excused int
	var bad []string
	for _, a := range l.attempts {
		if a.err == nil {
			ok++
			continue
		}
		inWindow := false
		for _, w := range windows {
			if a.start.Before(w.to) && a.end.After(w.from) {
				inWindow = true
			}
		}
		if inWindow {
			excused++
			continue
		}
		bad = append(bad, fmt.Sprintf("%s (+%s): %v", a.start.Format("15:04:05.000"), a.end.Sub(a.start).Round(time.Millisecond), a.err))
	}
	var ws []string
	for _, w := range windows {
		ws = append(ws, fmt.Sprintf("%s %s-%s (%s)", w.what, w.from.Format("15:04:05.000"), w.to.Format("15:04:05.000"), w.to.Sub(w.from).Round(time.Millisecond)))
	}
	t.Logf("connection attempts: %d, succeeded %d, failed inside nats-server's restart/reload windows %d, failed outside %d; windows: %s",
		len(l.attempts), ok, excused, len(bad), strings.Join(ws, ", "))
	if ok == 0 {
		t.Error("no connection attempt succeeded")
	}
	if len(bad) > 0 {
		if len(bad) > 10 {
			bad = append(bad[:10], fmt.Sprintf("... and %d more", len(bad)-10))
		}
		t.Errorf("%d connection attempts failed outside nats-server's restarts and reloads:\n%s", len(bad), strings.Join(bad, "\n"))
	}
}
