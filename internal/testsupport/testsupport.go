// Package testsupport holds the helpers the tests of several packages share: a log sink that
// goroutines and the test can use at once, and a poll-until-deadline wait. It is imported by
// tests only.
package testsupport

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
)

// LogBuffer collects output written from several goroutines (a slog handler, a command's
// stdout) for the test to read at any time. The zero value is ready to use.
type LogBuffer struct {
	// Tee, if set, also gets everything written, in order: t.Output() shows the log with the
	// test's own output.
	Tee io.Writer

	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p, and writes it to Tee if set.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	if l.Tee != nil {
		return l.Tee.Write(p)
	}
	return len(p), nil
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pollInterval is how often WaitFor asks its condition again.
const pollInterval = 5 * time.Millisecond

// WaitFor polls cond until it holds, failing the test with what once timeout has passed.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
			return
		}
		<-tick.C
	}
}

// RunUntilCleanup runs run in a goroutine with a context that is cancelled when the test ends,
// and then waits (up to 10 s) for run to return, reporting an error it returns or a run that
// does not stop.
func RunUntilCleanup(t testing.TB, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of the test's end")
		}
	})
}

// StartNATS runs an embedded nats-server from conf, written to a file as a user would write
// it (a random client port unless conf sets one), and stops it when the test ends. It returns
// the server and the config file's path.
func StartNATS(t testing.TB, conf string) (*server.Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, conf)
	}
	opts.NoLog, opts.NoSigs = true, true
	if opts.Port == 0 {
		opts.Port = -1
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s, path
}

// Metric returns the value of the counter or gauge name whose labels include labels (pairs:
// "result", "allowed", ...), summed over the series that match; 0 when there is none.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// PublicKey returns kp's public key.
func PublicKey(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Seed returns kp's seed.
func Seed(t testing.TB, kp nkeys.KeyPair) []byte {
	t.Helper()
	s, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
