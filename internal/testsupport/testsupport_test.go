package testsupport

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLogBuffer(t *testing.T) {
	var l LogBuffer
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() { fmt.Fprintf(&l, "line %d\n", i) })
	}
	wg.Wait()
	if got := strings.Count(l.String(), "\n"); got != 10 {
		t.Errorf("%d lines written, want 10:\n%s", got, l.String())
	}
}

func TestLogBufferTee(t *testing.T) {
	var tee strings.Builder
	l := LogBuffer{Tee: &tee}
	fmt.Fprint(&l, "one\n")
	fmt.Fprint(&l, "two\n")
	if l.String() != "one\ntwo\n" || tee.String() != l.String() {
		t.Errorf("buffer %q, tee %q; want both %q", l.String(), tee.String(), "one\ntwo\n")
	}
}

// recorder is a testing.TB that records a Fatalf instead of ending the test.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestWaitFor(t *testing.T) {
	var calls atomic.Int32
	r := &recorder{TB: t}
	WaitFor(r, "the third call", 10*time.Second, func() bool { return calls.Add(1) == 3 })
	if r.failed != "" || calls.Load() != 3 {
		t.Errorf("WaitFor failed %q after %d calls, want success after 3", r.failed, calls.Load())
	}

	r = &recorder{TB: t}
	WaitFor(r, "never", 20*time.Millisecond, func() bool { return false })
	if want := "timed out after 20ms waiting for never"; r.failed != want {
		t.Errorf("WaitFor failure = %q, want %q", r.failed, want)
	}
}

func TestMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "h"}, []string{"result", "reason"})
	reg.MustRegister(c)
	c.WithLabelValues("allowed", "ok").Add(2)
	c.WithLabelValues("denied", "expired").Add(3)
	c.WithLabelValues("denied", "bad_signature").Add(4)
	for _, tt := range []struct {
		labels []string
		want   float64
	}{
		{nil, 9},
		{[]string{"result", "denied"}, 7},
		{[]string{"result", "denied", "reason", "expired"}, 3},
		{[]string{"result", "dropped"}, 0},
	} {
		if got := Metric(t, reg, "c_total", tt.labels...); got != tt.want {
			t.Errorf("Metric(%q) = %g, want %g", tt.labels, got, tt.want)
		}
	}
}
