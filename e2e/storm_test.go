//go:build e2e

package e2e

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// stormClients is how many connections reconnect at once in TestReconnectStorm
// (E2E_STORM_CLIENTS overrides it for a bigger load run).
const stormClients = 1000

// stormClientOptions are the reconnect settings docs/performance.md recommends to workloads
// that reconnect in large numbers: a connect timeout above nats-server's authorization timeout
// (2 s), so that a client does not give up on a callout the server is still waiting for and
// retry with a new one; reconnect jitter, so that a fleet spreads its reconnects instead of
// arriving in the same instant; and IgnoreAuthErrorAbort, so that a refused attempt is retried.
func stormClientOptions(jitter time.Duration) []nats.Option {
	return []nats.Option{
		nats.Timeout(5 * time.Second),
		nats.ReconnectJitter(jitter, jitter),
		nats.IgnoreAuthErrorAbort(),
	}
}

// A reconnect storm: many workloads connected through the callout, then their nats-server
// restarts and they all reconnect at once, each reconnect a callout. Every one must get back
// in with its permissions, none may be denied, and the run prints how long the storm took,
// how many callouts it took per client and what it cost the sidecar. Figures are printed,
// never asserted.
//
//	scripts/e2e.sh -run TestReconnectStorm     (E2E_STORM_CLIENTS=N for another size;
//	                                            E2E_STORM_NATS_DEFAULTS=1: clients with nats.go's
//	                                            default options instead of the recommended ones;
//	                                            E2E_STORM_JITTER=5s: the clients' reconnect jitter;
//	                                            E2E_STORM_SERVICE_ENV="CALLOUT_WORKERS=4 ...": the
//	                                            sidecar's settings)
func TestReconnectStorm(t *testing.T) {
	n := stormClients
	if v := os.Getenv("E2E_STORM_CLIENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("E2E_STORM_CLIENTS=%q: want a positive number", v)
		}
	}
	jitter := 2 * time.Second
	if v := os.Getenv("E2E_STORM_JITTER"); v != "" {
		var err error
		if jitter, err = time.ParseDuration(v); err != nil || jitter < 0 {
			t.Fatalf("E2E_STORM_JITTER=%q: want a duration", v)
		}
	}
	clientOpts := stormClientOptions(jitter)
	clients := fmt.Sprintf("recommended options (nats.Timeout 5s, ReconnectJitter %s, IgnoreAuthErrorAbort)", jitter)
	if os.Getenv("E2E_STORM_NATS_DEFAULTS") == "1" {
		clientOpts, clients = nil, "nats.go default options"
	}
	// Each connection is a file descriptor here and in nats-server (Go raises the soft limit to
	// the hard one at start); leave room for everything else on a machine with a low limit.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(n)+512 {
		capped := max(int(lim.Cur)-512, 100) //nolint:gosec // a file descriptor limit fits an int
		t.Logf("RLIMIT_NOFILE is %d: %d connections instead of %d", lim.Cur, capped, n)
		n = capped
	}
	var serviceEnv []string
	if v := os.Getenv("E2E_STORM_SERVICE_ENV"); v != "" {
		serviceEnv = strings.Fields(v)
	}
	d := newDeployment(t, deployOpts{xkey: true, serviceEnv: serviceEnv})
	url := d.nats.url()
	ns := newNamespace(t, "storm")
	const accounts = 10
	tokens := make([]string, accounts)
	for i := range accounts {
		name := fmt.Sprintf("worker-%d", i)
		newServiceAccount(t, ns, name, nil)
		tokens[i] = token(t, ns, name)
	}
	connectWhenKnown(t, url, tokens[accounts-1]).Close()

	var reconnected atomic.Int64
	conns := make([]*nats.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 50) // connect the fleet at a steady pace, not as a storm
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			nc, err := nats.Connect(url, append([]nats.Option{
				nats.Token(tokens[i%accounts]),
				nats.Name(fmt.Sprintf("storm-%d", i)),
				nats.MaxReconnects(-1),
				nats.ReconnectHandler(func(*nats.Conn) { reconnected.Add(1) }),
				nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
			}, clientOpts...)...)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = nc
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("connecting the fleet: %v", err)
	}
	t.Cleanup(func() {
		for _, nc := range conns {
			nc.Close()
		}
	})
	before := d.svc.metrics(t)
	// A callout the server gave up on (no answer within its authorization timeout) or that was
	// refused is an "authentication error" in its log; the log file carries on over restarts.
	refusedBefore := strings.Count(d.nats.p.log(), "authentication error")
	sidecarCPU, selfCPU := procCPU(t, d.svc.p.pid()), procCPU(t, os.Getpid())

	start := time.Now()
	d.restartNATS(t, d.conf)
	eventually(t, 3*time.Minute, fmt.Sprintf("all %d connections back", n), func() error {
		if got := reconnected.Load(); got < int64(n) {
			return fmt.Errorf("%d of %d reconnected", got, n)
		}
		return nil
	})
	took := time.Since(start)
	sidecarCPU, selfCPU = procCPU(t, d.svc.p.pid())-sidecarCPU, procCPU(t, os.Getpid())-selfCPU
	serverCPU := procCPU(t, d.nats.p.pid()) // the restarted process: all of it is the storm's

	// Back with their permissions: each publishes in its namespace and is not refused.
	for i, nc := range conns {
		if err := nc.Publish(ns+".storm", []byte("back")); err != nil {
			t.Fatalf("connection %d after the storm: %v", i, err)
		}
	}
	for i, nc := range conns {
		if err := flushErr(nc); err != nil {
			t.Fatalf("connection %d after the storm: %v", i, err)
		}
	}

	after := d.svc.metrics(t)
	delta := func(labels ...string) float64 {
		return after.sum("nats_callout_requests_total", labels...) - before.sum("nats_callout_requests_total", labels...)
	}
	if denied := delta("result", "denied"); denied != 0 {
		t.Errorf("%g reconnects denied: %s", denied, after.requestsString())
	}
	if allowed := delta("result", "allowed"); allowed < float64(n) {
		t.Errorf("%g reconnects allowed, want at least %d", allowed, n)
	}
	refused := strings.Count(d.nats.p.log(), "authentication error") - refusedBefore
	p50, p99 := histogramQuantile(before, after, "nats_callout_request_duration_seconds", 0.5),
		histogramQuantile(before, after, "nats_callout_request_duration_seconds", 0.99)
	wait50, wait99 := histogramQuantile(before, after, "nats_callout_queue_wait_seconds", 0.5),
		histogramQuantile(before, after, "nats_callout_queue_wait_seconds", 0.99)
	t.Logf("reconnect storm, %d clients with %s: all back %.1fs after the nats-server restart began; "+
		"callouts received %g (%.2f per client): allowed %g (%.2f per client), dropped %g (overloaded %g, deadline_exceeded %g, bad_request %g), denied %g; "+
		"connect attempts the server failed (callout timed out or refused) %d; "+
		"callout p50 <= %s, p99 <= %s, queue wait p50 <= %s, p99 <= %s (histogram bucket bounds); "+
		"CPU during the storm: sidecar %s, nats-server %s, clients %s; sidecar RSS %.0f MiB, goroutines %g",
		n, clients, took.Seconds(),
		delta(), delta()/float64(n), delta("result", "allowed"), delta("result", "allowed")/float64(n),
		delta("result", "dropped"), delta("reason", "overloaded"), delta("reason", "deadline_exceeded"), delta("reason", "bad_request"), delta("result", "denied"),
		refused, p50, p99, wait50, wait99,
		sidecarCPU, serverCPU, selfCPU, after.sum("process_resident_memory_bytes")/(1<<20), after.sum("go_goroutines"))
}

// histogramQuantile is the upper bound of the histogram bucket holding quantile q of the
// observations made between two scrapes.
func histogramQuantile(before, after metricSet, name string, q float64) string {
	type bucket struct{ le, count float64 }
	var buckets []bucket
	for _, s := range after {
		if s.name != name+"_bucket" {
			continue
		}
		le, err := strconv.ParseFloat(s.labels["le"], 64)
		if err != nil {
			continue
		}
		buckets = append(buckets, bucket{le, s.value - before.sum(name+"_bucket", "le", s.labels["le"])})
	}
	slices.SortFunc(buckets, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	if len(buckets) == 0 || buckets[len(buckets)-1].count == 0 {
		return "n/a"
	}
	target := q * buckets[len(buckets)-1].count
	for _, b := range buckets {
		if b.count >= target {
			if math.IsInf(b.le, 1) {
				return "+Inf"
			}
			return (time.Duration(b.le * float64(time.Second))).String()
		}
	}
	return "n/a"
}

// Workloads reconnecting while no sidecar answers (nats-server restarted, its sidecar not back
// yet): each attempt is refused with an authorization error. nats.go gives up for good after
// the same authorization error twice unless the client sets IgnoreAuthErrorAbort, which the
// README therefore recommends: those clients get back in as soon as the sidecar answers.
func TestReconnectWhileCalloutDown(t *testing.T) {
	t.Parallel()
	d := newDeployment(t, deployOpts{})
	url := d.nats.url()
	ns := newNamespace(t, "patience")
	newServiceAccount(t, ns, "worker", nil)
	tok := token(t, ns, "worker")
	connectWhenKnown(t, url, tok).Close()

	fleet := func(patient bool) []*nats.Conn {
		var out []*nats.Conn
		for range 5 {
			opts := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(200 * time.Millisecond)}
			if patient {
				opts = append(opts, nats.IgnoreAuthErrorAbort())
			}
			out = append(out, connect(t, url, tok, opts...))
		}
		return out
	}
	patient, plain := fleet(true), fleet(false)

	if err := d.svc.p.signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := d.svc.p.signal(syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(resume)
	d.nats.restart(t)
	// Refused reconnect attempts until nats.go gives up on a client without the option (two
	// in a row); the others have been refused as often by then.
	eventually(t, 30*time.Second, "a client without IgnoreAuthErrorAbort gave up for good (why the README recommends the option)", func() error {
		if !slices.ContainsFunc(plain, (*nats.Conn).IsClosed) {
			return errors.New("all still reconnecting")
		}
		return nil
	})
	resume()

	eventually(t, 30*time.Second, "the IgnoreAuthErrorAbort clients back", func() error {
		for i, nc := range patient {
			if !nc.IsConnected() {
				return fmt.Errorf("client %d: %s (last error %w)", i, nc.Status(), nc.LastError())
			}
		}
		return nil
	})
	for i, nc := range patient {
		if err := nc.Publish(ns+".back", nil); err != nil {
			t.Errorf("client %d: %v", i, err)
		} else if err := flushErr(nc); err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	closed := 0
	for _, nc := range plain {
		if nc.IsClosed() {
			closed++
		}
	}
	t.Logf("without IgnoreAuthErrorAbort %d of %d clients gave up for good while the sidecar was away", closed, len(plain))
	if closed == 0 {
		t.Error("no client without IgnoreAuthErrorAbort gave up: the README's advice to set it is not needed any more")
	}
}
