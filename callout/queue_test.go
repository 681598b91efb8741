package callout_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// orderVerifier records the tokens in the order the workers verify them.
type orderVerifier struct {
	next  callout.TokenVerifier
	mu    sync.Mutex
	order []string
}

func (o *orderVerifier) Verify(ctx context.Context, token string) (kube.Identity, error) {
	o.mu.Lock()
	o.order = append(o.order, token)
	o.mu.Unlock()
	return o.next.Verify(ctx, token)
}

func (o *orderVerifier) seen() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.order...)
}

// TestQueueNewestFirstDropsOldest: with the one worker busy, queued requests are answered
// newest first, and a request arriving at a full queue pushes out the oldest queued one
// (overloaded), whose client is the closest to giving up.
func TestQueueNewestFirstDropsOldest(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, false)
	srv := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, k.service)}, authTimeout: 5})
	names := []string{"busy", "oldest", "older", "newest"}
	tokens := map[string]string{}
	for _, n := range names {
		tokens[n] = w.token("shop", n)
	}
	gate := newGatedVerifier(w.verifier)
	order := &orderVerifier{next: gate}
	sc := w.startSidecar(sidecarConfig{url: srv.url(), creds: fixedCreds(t, k.service), keys: fixedRing(t, k.issuer),
		verifier: order, workers: 1, queue: 2, requestTimeout: 4 * time.Second})
	sc.waitReady()

	results := make(map[string]chan error, len(names))
	for i, n := range names {
		results[n] = make(chan error, 1)
		go func() {
			nc, err := nats.Connect(srv.url(), nats.Token(tokens[n]), nats.MaxReconnects(0), nats.Timeout(10*time.Second))
			if err == nil {
				nc.Close()
			}
			results[n] <- err
		}()
		if i == 0 {
			testsupport.WaitFor(t, "the worker busy", 10*time.Second, func() bool { return gate.entered.Load() == 1 })
			continue
		}
		// One at a time, so that the arrival order is known.
		want := min(i, 2)
		testsupport.WaitFor(t, "request queued", 10*time.Second, func() bool {
			if i == 3 {
				return sc.metric("nats_callout_requests_total", "result", "dropped", "reason", callout.ReasonOverloaded) == 1
			}
			return sc.svc.QueuedRequests() == want
		})
	}
	if q := sc.svc.QueuedRequests(); q != 2 {
		t.Fatalf("%d requests queued, want 2 (the queue size)", q)
	}
	gate.open()

	for _, n := range []string{"busy", "older", "newest"} {
		if err := <-results[n]; err != nil {
			t.Errorf("client %q: %v", n, err)
		}
	}
	if err := <-results["oldest"]; err == nil {
		t.Error(`client "oldest" connected: its request should have been dropped to make room`)
	}
	var got []string
	for _, tok := range order.seen() {
		for n, nt := range tokens {
			if tok == nt {
				got = append(got, n)
			}
		}
	}
	if want := "busy newest older"; strings.Join(got, " ") != want {
		t.Errorf("verified in the order %q, want %q (newest first, oldest dropped)", strings.Join(got, " "), want)
	}
	if n := sc.metric("nats_callout_requests_total", "result", "dropped", "reason", callout.ReasonOverloaded); n != 1 {
		t.Errorf("%g requests dropped as overloaded, want 1", n)
	}
	if n := histogramCount(t, sc, "nats_callout_queue_wait_seconds"); n != 3 {
		t.Errorf("queue wait observed %d times, want 3 (every request a worker took)", n)
	}
}

// holdingVerifier holds its first verification until release, whatever the request's
// deadline, as a worker stuck on a slow step would.
type holdingVerifier struct {
	next    callout.TokenVerifier
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *holdingVerifier) Verify(ctx context.Context, token string) (kube.Identity, error) {
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.entered)
		<-h.release
	}
	return h.next.Verify(ctx, token)
}

// TestQueueStaleRequestsCostNothing: a request that waited in the queue past its deadline is
// dropped (deadline_exceeded) without its token being verified, and requests arriving later
// are answered.
func TestQueueStaleRequestsCostNothing(t *testing.T) {
	w := newWorld(t)
	k := newKeys(t, false)
	srv := startNATS(t, natsConf{issuer: testsupport.PublicKey(t, k.issuer), serviceKeys: []string{testsupport.PublicKey(t, k.service)}})
	busy, stale, fresh := w.token("shop", "busy"), w.token("shop", "stale"), w.token("shop", "fresh")
	hold := &holdingVerifier{next: w.verifier, entered: make(chan struct{}), release: make(chan struct{})}
	order := &orderVerifier{next: hold}
	const timeout = 300 * time.Millisecond
	sc := w.startSidecar(sidecarConfig{url: srv.url(), creds: fixedCreds(t, k.service), keys: fixedRing(t, k.issuer),
		verifier: order, workers: 1, queue: 8, requestTimeout: timeout})
	sc.waitReady()

	connect := func(tok string, errs chan<- error) {
		nc, err := nats.Connect(srv.url(), nats.Token(tok), nats.MaxReconnects(0), nats.Timeout(10*time.Second))
		if err == nil {
			nc.Close()
		}
		errs <- err
	}
	busyErr, staleErr := make(chan error, 1), make(chan error, 1)
	go connect(busy, busyErr)
	<-hold.entered
	go connect(stale, staleErr)
	testsupport.WaitFor(t, "request queued", 10*time.Second, func() bool { return sc.svc.QueuedRequests() == 1 })
	queued := time.Now()
	testsupport.WaitFor(t, "the queued request past its deadline", 10*time.Second, func() bool {
		return time.Since(queued) > 2*timeout
	})
	close(hold.release)
	if err := <-busyErr; err == nil {
		t.Error("the request held past its deadline was answered")
	}
	if err := <-staleErr; err == nil {
		t.Error("the request queued past its deadline was answered")
	}
	mustConnect(t, srv.url(), fresh)

	if got := order.seen(); len(got) != 2 || got[0] != busy || got[1] != fresh {
		t.Errorf("%d tokens verified, want 2: the held one and the fresh one, not the stale one", len(got))
	}
	if n := sc.metric("nats_callout_requests_total", "result", "dropped", "reason", callout.ReasonDeadline); n != 2 {
		t.Errorf("%g requests dropped as deadline_exceeded, want 2", n)
	}
}

// histogramCount is how many observations a histogram of the sidecar's registry holds.
func histogramCount(t *testing.T, sc *sidecar, name string) uint64 {
	t.Helper()
	mfs, err := sc.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var n uint64
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
			return n
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
