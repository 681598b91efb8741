package reload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
)

const (
	testDebounce = 10 * time.Millisecond
	waitLimit    = 10 * time.Second
)

// parseCred accepts "good:<value>" and nothing else. Like a real parser, its error does not
// quote the content.
func parseCred(data []byte) (string, error) {
	v, ok := strings.CutPrefix(string(data), "good:")
	if !ok {
		return "", errors.New("not a credential")
	}
	return v, nil
}

type harness struct {
	t    *testing.T
	dir  string // a temporary directory that outlives the Watcher
	w    *Watcher
	reg  *prometheus.Registry
	logs *testsupport.LogBuffer // also copied to the test log
	run  func()                 // starts Run; stopped and checked at cleanup
}

// newHarness returns a Watcher with its own registry and captured logs. Whether or not the test
// starts it, cleanup stops it and checks that Run returned nil, before h.dir is removed.
func newHarness(t *testing.T, opts ...Option) *harness {
	t.Helper()
	dir := t.TempDir() // cleanups run last-in first-out: the Watcher stops first
	logs := &testsupport.LogBuffer{Tee: t.Output()}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	w, err := NewWatcher(logger, reg, append([]Option{WithDebounce(testDebounce), WithResyncInterval(time.Hour)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := false
	h := &harness{t: t, dir: dir, w: w, reg: reg, logs: logs}
	h.run = func() {
		started = true
		go func() { done <- w.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		if !started {
			h.run() // releases the fsnotify watcher of a Watcher the test never ran
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %v of cancellation", waitLimit)
		}
	})
	return h
}

// watched is a file registered with the harness's Watcher, with what onChange saw.
type watched struct {
	*File[string]
	changes chan string
	calls   atomic.Int32
}

func (h *harness) add(name, path string) *watched {
	h.t.Helper()
	wf := &watched{changes: make(chan string, 128)}
	f, err := Add(h.w, name, path, parseCred, func(v string) {
		wf.calls.Add(1)
		wf.changes <- v
	})
	if err != nil {
		h.t.Fatalf("Add(%s, %s): %v", name, path, err)
	}
	wf.File = f
	return wf
}

// waitValue waits until onChange has been called with want and checks that Current agrees.
func (wf *watched) waitValue(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case got := <-wf.changes:
			if got != want {
				continue
			}
			if cur := wf.Current(); cur != want {
				t.Fatalf("Current() = %q after onChange(%q)", cur, want)
			}
			return
		case <-deadline:
			t.Fatalf("onChange(%q) not called within %v; Current() = %q", want, waitLimit, wf.Current())
		}
	}
}

func (h *harness) reloads(name, result string) float64 {
	return testutil.ToFloat64(h.w.metrics.reloads.WithLabelValues(name, result))
}

func (h *harness) successful(name string) float64 {
	return testutil.ToFloat64(h.w.metrics.lastSuccessful.WithLabelValues(name))
}

func (h *harness) lastSuccessTime(name string) float64 {
	return testutil.ToFloat64(h.w.metrics.lastSuccessTime.WithLabelValues(name))
}

// wantMetrics checks the reload counters and the last-reload-successful gauge of one file.
func (h *harness) wantMetrics(name string, success, failure, successful float64) {
	h.t.Helper()
	if got := h.reloads(name, "success"); got != success {
		h.t.Errorf("reloads_total{file=%q,result=success} = %v, want %v", name, got, success)
	}
	if got := h.reloads(name, "failure"); got != failure {
		h.t.Errorf("reloads_total{file=%q,result=failure} = %v, want %v", name, got, failure)
	}
	if got := h.successful(name); got != successful {
		h.t.Errorf("last_reload_successful{file=%q} = %v, want %v", name, got, successful)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAtomicSwapRotation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	vol := newSecretVolume(t, filepath.Join(h.dir, "nats-creds"), map[string]string{"creds": "good:v1"})
	creds := h.add("creds", vol.path("creds"))
	loaded := h.lastSuccessTime("creds")
	if got := creds.Current(); got != "v1" {
		t.Fatalf("Current() after Add = %q, want v1", got)
	}
	if loaded == 0 {
		t.Error("last_reload_success_timestamp_seconds not set by the initial load")
	}
	h.wantMetrics("creds", 0, 0, 1)
	h.run()

	for i, want := range []string{"v2", "v3"} {
		swapped := vol.update(map[string]string{"creds": "good:" + want})
		creds.waitValue(t, want)
		t.Logf("rotation %d: ..data swap to onChange: %v (debounce %v)", i+1, time.Since(swapped), testDebounce)
	}
	h.wantMetrics("creds", 2, 0, 1)
	if got := h.lastSuccessTime("creds"); got < loaded {
		t.Errorf("last_reload_success_timestamp_seconds = %v, want at least %v", got, loaded)
	}
	if got := creds.calls.Load(); got != 2 {
		t.Errorf("onChange called %d times, want 2", got)
	}
}

func TestOverwriteInPlace(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path := filepath.Join(h.dir, "creds")
	writeFile(t, path, "good:v1")
	creds := h.add("creds", path)
	h.run()

	writeFile(t, path, "good:v2")
	creds.waitValue(t, "v2")
	// A reader may catch the file between truncation and write (a failure that the write's own
	// event repairs), so only the successes are exact here.
	if got := h.reloads("creds", "success"); got != 1 {
		t.Errorf("reloads_total{result=success} = %v, want 1", got)
	}
	if got := h.successful("creds"); got != 1 {
		t.Errorf("last_reload_successful = %v, want 1", got)
	}
}

func TestDeleteAndRecreate(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path := filepath.Join(h.dir, "creds")
	writeFile(t, path, "good:v1")
	creds := h.add("creds", path)
	h.run()

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "deleted file counted as a failed reload", waitLimit, func() bool { return h.reloads("creds", "failure") == 1 })
	if got := creds.Current(); got != "v1" {
		t.Errorf("Current() with the file deleted = %q, want v1 kept", got)
	}
	h.wantMetrics("creds", 0, 1, 0)

	writeFile(t, path, "good:v2")
	creds.waitValue(t, "v2")
	h.wantMetrics("creds", 1, 1, 1)
}

func TestGarbageKeepsOldValue(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	vol := newSecretVolume(t, filepath.Join(h.dir, "nats-creds"), map[string]string{"creds": "good:v1"})
	creds := h.add("creds", vol.path("creds"))
	h.run()

	const garbage = "SUAGARBAGESEEDTHATMUSTNEVERBELOGGED"
	vol.update(map[string]string{"creds": garbage})
	testsupport.WaitFor(t, "garbage counted as a failed reload", waitLimit, func() bool { return h.reloads("creds", "failure") == 1 })
	if got := creds.Current(); got != "v1" {
		t.Errorf("Current() after garbage = %q, want v1 kept", got)
	}
	h.wantMetrics("creds", 0, 1, 0)

	// Back to the content in use: healthy again, nothing to swap.
	vol.update(map[string]string{"creds": "good:v1"})
	testsupport.WaitFor(t, "restored content marked successful", waitLimit, func() bool { return h.successful("creds") == 1 })
	h.wantMetrics("creds", 0, 1, 1)

	vol.update(map[string]string{"creds": garbage + "2"})
	testsupport.WaitFor(t, "second garbage counted", waitLimit, func() bool { return h.reloads("creds", "failure") == 2 })
	vol.update(map[string]string{"creds": "good:v2"})
	creds.waitValue(t, "v2")
	h.wantMetrics("creds", 1, 2, 1)
	if got := creds.calls.Load(); got != 1 {
		t.Errorf("onChange called %d times, want 1 (only for v2)", got)
	}

	logs := h.logs.String()
	if !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "not a credential") {
		t.Errorf("logs lack an error line with the parse error:\n%s", logs)
	}
	for _, secret := range []string{garbage, "good:"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain file content %q:\n%s", secret, logs)
		}
	}
}

func TestUnchangedContentDoesNotReload(t *testing.T) {
	t.Parallel()
	t.Run("atomic swap", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		vol := newSecretVolume(t, filepath.Join(h.dir, "nats-creds"),
			map[string]string{"creds": "good:v1", "marker": "good:m1"})
		// Files are checked in the order added, so once marker's change is seen, creds (added
		// first, same directory) has been checked too.
		creds := h.add("creds", vol.path("creds"))
		marker := h.add("marker", vol.path("marker"))
		h.run()

		vol.update(map[string]string{"creds": "good:v1", "marker": "good:m2"})
		marker.waitValue(t, "m2")
		if got := creds.calls.Load(); got != 0 {
			t.Errorf("creds onChange called %d times for unchanged content, want 0", got)
		}
		h.wantMetrics("creds", 0, 0, 1)
		h.wantMetrics("marker", 1, 0, 1)
	})
	t.Run("rewrite in place", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		dir := h.dir
		writeFile(t, filepath.Join(dir, "creds"), "good:v1")
		writeFile(t, filepath.Join(dir, "marker"), "good:m1")
		creds := h.add("creds", filepath.Join(dir, "creds"))
		marker := h.add("marker", filepath.Join(dir, "marker"))
		h.run()

		writeFile(t, filepath.Join(dir, "creds"), "good:v1")
		writeFile(t, filepath.Join(dir, "marker"), "good:m2")
		marker.waitValue(t, "m2")
		if got := creds.calls.Load(); got != 0 {
			t.Errorf("creds onChange called %d times for unchanged content, want 0", got)
		}
		if got := h.reloads("creds", "success"); got != 0 {
			t.Errorf("creds reloads_total{result=success} = %v, want 0", got)
		}
	})
}

func TestBurstIsCoalesced(t *testing.T) {
	t.Parallel()
	// A longer quiet period than the other tests, so that a slow -race run does not split the
	// burst into many windows.
	h := newHarness(t, WithDebounce(50*time.Millisecond))
	vol := newSecretVolume(t, filepath.Join(h.dir, "nats-creds"), map[string]string{"creds": "good:0"})
	creds := h.add("creds", vol.path("creds"))
	h.run()

	const burst = 30
	for i := 1; i <= burst; i++ {
		vol.update(map[string]string{"creds": fmt.Sprintf("good:%d", i)})
	}
	creds.waitValue(t, fmt.Sprint(burst))
	calls := creds.calls.Load()
	t.Logf("%d updates reloaded %d times", burst, calls)
	if calls > 5 {
		t.Errorf("%d updates in a burst reloaded %d times, want at most 5", burst, calls)
	}
	h.wantMetrics("creds", float64(calls), 0, 1)
}

func TestDirectoryRemovedAndRecreated(t *testing.T) {
	t.Parallel()
	h := newHarness(t) // resync is an hour: only the re-added watch can see the changes
	dir := filepath.Join(h.dir, "nats-creds")
	vol := newSecretVolume(t, dir, map[string]string{"creds": "good:v1"})
	creds := h.add("creds", vol.path("creds"))
	h.run()

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	testsupport.WaitFor(t, "removed directory counted as a failed reload", waitLimit, func() bool { return h.reloads("creds", "failure") == 1 })
	if got := creds.Current(); got != "v1" {
		t.Errorf("Current() with the directory removed = %q, want v1 kept", got)
	}

	vol = newSecretVolume(t, dir, map[string]string{"creds": "good:v2"})
	creds.waitValue(t, "v2")
	vol.update(map[string]string{"creds": "good:v3"})
	creds.waitValue(t, "v3")
	h.wantMetrics("creds", 2, 1, 1)
	if logs := h.logs.String(); !strings.Contains(logs, "watching directory again") {
		t.Errorf("logs do not mention the directory being watched again:\n%s", logs)
	}
}

func TestPeriodicResyncCatchesMissedEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t, WithResyncInterval(20*time.Millisecond))
	// The watched directory holds only a symlink to a file elsewhere: changes to the target
	// raise no event in the watched directory.
	target := filepath.Join(h.dir, "elsewhere", "creds")
	link := filepath.Join(h.dir, "mount", "creds")
	for _, d := range []string{filepath.Dir(target), filepath.Dir(link)} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, target, "good:v1")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	creds := h.add("creds", link)
	h.run()

	writeFile(t, target, "good:v2")
	creds.waitValue(t, "v2")
}

func TestAddErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dir := h.dir
	writeFile(t, filepath.Join(dir, "garbage"), "garbage")
	writeFile(t, filepath.Join(dir, "good"), "good:v1")
	h.add("creds", filepath.Join(dir, "good"))
	tests := []struct {
		name, file, path string
		wantErr          []string
	}{
		{"missing file", "creds2", filepath.Join(dir, "missing"), []string{"creds2", filepath.Join(dir, "missing"), "no such file"}},
		{"missing directory", "xkey", filepath.Join(dir, "nodir", "xkey"), []string{"xkey", filepath.Join(dir, "nodir")}},
		{"does not parse", "signing_key", filepath.Join(dir, "garbage"), []string{"signing_key", filepath.Join(dir, "garbage"), "not a credential"}},
		{"name taken", "creds", filepath.Join(dir, "good"), []string{`"creds" already added`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Add(h.w, tt.file, tt.path, parseCred, nil)
			if err == nil {
				t.Fatalf("Add(%s) = %v, nil; want an error", tt.path, f)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Add(%s) error %q does not contain %q", tt.path, err, want)
				}
			}
		})
	}
	if logs := h.logs.String(); strings.Contains(logs, "garbage") {
		t.Errorf("logs contain file content:\n%s", logs)
	}
}

func TestNewWatcherRejectsBadOptions(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	for name, opts := range map[string][]Option{
		"zero debounce":         {WithDebounce(0)},
		"negative resync":       {WithResyncInterval(-time.Second)},
		"nil logger (see call)": nil,
	} {
		l := logger
		if opts == nil {
			l = nil
		}
		if w, err := NewWatcher(l, nil, opts...); err == nil {
			t.Errorf("%s: NewWatcher = %v, nil; want an error", name, w)
		}
	}
}

// TestMetricNames pins the exposed names and labels, which dashboards and alerts depend on.
func TestMetricNames(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path := filepath.Join(h.dir, "signing_key")
	writeFile(t, path, "good:k1")
	h.add("signing_key", path)

	const want = `
# HELP nats_callout_last_reload_successful 1 if the file's current content is in use, 0 if the last reload failed and an older value is in use.
# TYPE nats_callout_last_reload_successful gauge
nats_callout_last_reload_successful{file="signing_key"} 1
# HELP nats_callout_reloads_total Reloads of mounted files: success when changed content was swapped in, failure when it could not be read or parsed.
# TYPE nats_callout_reloads_total counter
nats_callout_reloads_total{file="signing_key",result="failure"} 0
nats_callout_reloads_total{file="signing_key",result="success"} 0
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want),
		"nats_callout_reloads_total", "nats_callout_last_reload_successful"); err != nil {
		t.Error(err)
	}
	if got, err := testutil.GatherAndCount(h.reg, "nats_callout_last_reload_success_timestamp_seconds"); err != nil || got != 1 {
		t.Errorf("last_reload_success_timestamp_seconds series = %d (%v), want 1", got, err)
	}
}

// TestRunStopsCleanly is not parallel: it inspects all goroutines of the test binary, and no
// parallel test runs while the sequential tests do.
func TestRunStopsCleanly(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	w, err := NewWatcher(logger, nil, WithDebounce(testDebounce))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "creds"), "good:v1")
	if _, err := Add(w, "creds", filepath.Join(dir, "creds"), parseCred, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	writeFile(t, filepath.Join(dir, "creds"), "good:v2") // something in flight while stopping
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return within %v of cancellation", waitLimit)
	}

	testsupport.WaitFor(t, "no goroutine of the watcher left", waitLimit, func() bool {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		return !strings.Contains(stacks, "fsnotify") && !strings.Contains(stacks, "reload.(*Watcher)")
	})

	if err := w.Run(context.Background()); err == nil {
		t.Error("second Run = nil, want an error")
	}
	if _, err := Add(w, "xkey", filepath.Join(dir, "creds"), parseCred, nil); err == nil {
		t.Error("Add after Run stopped = nil error, want an error")
	}
}

// BenchmarkSwapLatency measures, with the default debounce, the time from the kubelet's atomic
// ..data swap to onChange being called with the new value (ns/op is one rotation).
func BenchmarkSwapLatency(b *testing.B) {
	w, err := NewWatcher(slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	vol := newSecretVolume(b, filepath.Join(b.TempDir(), "nats-creds"), map[string]string{"creds": "good:0"})
	changes := make(chan string, 1)
	if _, err := Add(w, "creds", vol.path("creds"), parseCred, func(v string) { changes <- v }); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Run = %v, want nil", err)
		}
	})

	var latency time.Duration
	n := 0
	for b.Loop() {
		n++
		want := fmt.Sprint(n)
		swapped := vol.update(map[string]string{"creds": "good:" + want})
		if got := <-changes; got != want {
			b.Fatalf("onChange(%q), want %q", got, want)
		}
		latency += time.Since(swapped)
	}
	b.ReportMetric(float64(latency)/float64(n)/float64(time.Millisecond), "ms/swap-to-onChange")
}
