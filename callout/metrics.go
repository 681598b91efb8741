package callout

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the callout's decision and connection metrics. Labels never carry a
// per-ServiceAccount value, so their cardinality stays fixed (the account label takes only
// NATS_ACCOUNT and NATS_ALLOWED_ACCOUNTS). One Metrics serves one Handler
// and the one Service using it.
type Metrics struct {
	requests    *prometheus.CounterVec
	duration    prometheus.Histogram
	queueWait   prometheus.Histogram
	reconnects  prometheus.Counter
	disconnects prometheus.Counter
	errors      prometheus.Counter

	// connected is asked at scrape time, so the gauge can never disagree with readiness.
	connected atomic.Pointer[func() bool]
}

// NewMetrics registers the callout metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "nats_callout_requests_total",
			Help: "Auth callout requests by result (allowed, denied, dropped), reason and the NATS account the user is (or would have been) placed in; account is empty when none was chosen yet.",
		}, []string{"result", "reason", "account"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name: "nats_callout_request_duration_seconds",
			Help: "Time from receiving a callout request to having its response ready.",
			// From well under a millisecond (cache hits) up to the server's 2 s auth timeout.
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2},
		}),
		queueWait: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "nats_callout_queue_wait_seconds",
			Help:    "Time a callout request waited between its arrival and a worker taking it (workers take the newest first).",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2},
		}),
		reconnects: f.NewCounter(prometheus.CounterOpts{
			Name: "nats_callout_nats_reconnects_total",
			Help: "Reconnections to nats-server after a lost connection (not counting credential rotations).",
		}),
		disconnects: f.NewCounter(prometheus.CounterOpts{
			Name: "nats_callout_nats_disconnects_total",
			Help: "Disconnections from nats-server.",
		}),
		errors: f.NewCounter(prometheus.CounterOpts{
			Name: "nats_callout_nats_errors_total",
			Help: "Errors reported by the NATS connection: failed connection attempts, authorization errors, slow consumer, ...",
		}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nats_callout_nats_connected",
		Help: "1 while the service is connected to nats-server with its callout subscription confirmed, else 0.",
	}, func() float64 {
		if up := m.connected.Load(); up != nil && (*up)() {
			return 1
		}
		return 0
	})
	for _, r := range []string{ReasonOK} {
		m.requests.WithLabelValues(ResultAllowed, r, "")
	}
	return m
}

// bindConnected sets what nats_callout_nats_connected reports.
func (m *Metrics) bindConnected(up func() bool) { m.connected.Store(&up) }

func (m *Metrics) observe(d Decision) {
	m.requests.WithLabelValues(d.Result, d.Reason, d.Account).Inc()
	m.duration.Observe(d.Duration.Seconds())
}

// dropped counts a request dropped before any decision was made.
func (m *Metrics) dropped(reason string) {
	m.requests.WithLabelValues(ResultDropped, reason, "").Inc()
}
