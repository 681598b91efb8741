package sidecar

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
)

// operatorCheck re-runs the operator-mode start-up check after a reload. A mismatch found then
// does not stop the service or reject the file (during a rotation the Secret and the ConfigMap
// reach the pod at different moments), but it is logged as an error, shown on /readyz and in
// nats_callout_operator_setup_ok until the files agree again. A nil *operatorCheck (server-config
// mode) checks nothing.
type operatorCheck struct {
	log     *slog.Logger
	current func() callout.OperatorSetup
	gauge   prometheus.Gauge

	mu  sync.Mutex
	err error
}

// newOperatorCheck checks the operator-mode files at start-up, so that a wrong key or a scoped
// signing key stops the service with an explanation instead of failing every client later.
func newOperatorCheck(log *slog.Logger, reg prometheus.Registerer, current func() callout.OperatorSetup) (*operatorCheck, error) {
	if err := callout.CheckOperatorSetup(current()); err != nil {
		return nil, err
	}
	o := &operatorCheck{log: log, current: current, gauge: promauto.With(reg).NewGauge(prometheus.GaugeOpts{
		Name: "nats_callout_operator_setup_ok",
		Help: "Operator mode: 1 while the mounted creds, keys and account JWTs agree with each other, 0 after a reload made them disagree.",
	})}
	o.gauge.Set(1)
	return o, nil
}

// recheck runs the check on the files now in use.
func (o *operatorCheck) recheck() {
	if o == nil {
		return
	}
	err := callout.CheckOperatorSetup(o.current())
	o.mu.Lock()
	prev := o.err
	o.err = err
	o.mu.Unlock()
	ok := 0.0
	if err == nil {
		ok = 1
	}
	o.gauge.Set(ok)
	switch {
	case err != nil:
		o.log.Error("operator-mode files disagree after a reload; logins may be refused until they agree again", "error", err)
	case prev != nil:
		o.log.Info("operator-mode files agree again")
	}
}

// Err is the result of the last check.
func (o *operatorCheck) Err() error {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}
