package reload

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

const (
	resultSuccess = "success"
	resultFailure = "failure"
)

type metrics struct {
	reloads         *prometheus.CounterVec
	lastSuccessTime *prometheus.GaugeVec
	lastSuccessful  *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		reloads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "nats_callout_reloads_total",
			Help: "Reloads of mounted files: success when changed content was swapped in, failure when it could not be read or parsed.",
		}, []string{"file", "result"}),
		lastSuccessTime: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nats_callout_last_reload_success_timestamp_seconds",
			Help: "Unix time at which the value in use was loaded from the file.",
		}, []string{"file"}),
		lastSuccessful: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nats_callout_last_reload_successful",
			Help: "1 if the file's current content is in use, 0 if the last reload failed and an older value is in use.",
		}, []string{"file"}),
	}
}
