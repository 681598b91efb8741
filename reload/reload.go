// Package reload keeps the parsed contents of mounted files (NATS credentials, signing keys,
// xkeys, manifests) current while the process runs, without a restart.
//
// Kubernetes updates a Secret or ConfigMap volume atomically. The kubelet writes the new
// content into a fresh hidden directory (..2026_11_28_10_00_00.123456789/), points a
// ..data_tmp symlink at it, renames ..data_tmp over ..data and removes the old directory. The
// file the container opens (creds) is a symlink to ..data/creds and never changes itself. So a
// Watcher watches the parent directory of each file, not the file, and treats any event there
// (create, write, remove, rename, chmod) as "maybe changed". It waits for a burst of events to
// settle, re-reads each file through its symlink and compares the SHA-256 of the content with
// the last content it saw. Content that changed is parsed completely and swapped in atomically
// only if it parses; otherwise the previous value stays in use, the failure is logged (never
// the content) and counted, and the next good write is picked up. A directory that is removed
// is watched again once it reappears, and a slow periodic re-check catches missed events.
//
// Files mounted with subPath never update: the kubelet bind-mounts the file that existed when
// the container started and never touches it again, so a rotated Secret is only seen after a
// restart. Mount the whole volume as a directory and point the service at the file inside it.
//
// Metrics, labelled with the short name given to [Add]:
//
//	nats_callout_reloads_total{file,result}                  reloads that changed the value ("success") or were rejected ("failure")
//	nats_callout_last_reload_success_timestamp_seconds{file} when the value in use was loaded (initial load included)
//	nats_callout_last_reload_successful{file}                1 if the file on disk is the value in use, 0 after a failed reload
package reload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

const (
	// DefaultDebounce is how long a directory must stay quiet after an event before its files
	// are re-read. A kubelet update is a handful of events within a millisecond or two.
	DefaultDebounce = 100 * time.Millisecond
	// DefaultResyncInterval is how often every file is re-read even without events.
	DefaultResyncInterval = 30 * time.Second

	// A stream of events never postpones a re-read by more than this many debounce periods.
	maxDebounceFactor = 10
	// Re-watching a removed directory backs off from the debounce period up to this.
	maxRewatchBackoff = 10 * time.Second
)

// Option changes how a Watcher times its work.
type Option func(*Watcher)

// WithDebounce sets how long a watched directory must be quiet after an event before its
// files are re-read (default [DefaultDebounce]). A continuous stream of events delays the
// re-read by at most ten such periods.
func WithDebounce(d time.Duration) Option {
	return func(w *Watcher) { w.debounce = d }
}

// WithResyncInterval sets how often every file is re-read even when no event arrived
// (default [DefaultResyncInterval]): the safety net for missed events.
func WithResyncInterval(d time.Duration) Option {
	return func(w *Watcher) { w.resync = d }
}

// Watcher watches the directories of registered files with one fsnotify watcher and reloads
// them. Create it with [NewWatcher], register files with [Add], then call [Watcher.Run] once.
type Watcher struct {
	logger   *slog.Logger
	fsw      *fsnotify.Watcher
	metrics  *metrics
	debounce time.Duration
	resync   time.Duration

	mu      sync.Mutex
	files   []reloader      // in the order added; the Run goroutine checks them in this order
	names   map[string]bool // names given to Add, unique because they label the metrics
	dirs    map[string]bool // directories watched
	running bool
	stopped bool
}

// reloader is what the Watcher needs from a File of any type.
type reloader interface {
	dir() string
	check()
}

// NewWatcher returns a Watcher that logs to logger and registers its metrics with reg (nil
// registers nowhere). It opens the fsnotify watcher now, so running out of inotify instances
// fails start-up rather than a later reload. [Watcher.Run] releases it.
func NewWatcher(logger *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Watcher, error) {
	if logger == nil {
		return nil, errors.New("reload: nil logger")
	}
	w := &Watcher{
		logger:   logger,
		debounce: DefaultDebounce,
		resync:   DefaultResyncInterval,
		names:    make(map[string]bool),
		dirs:     make(map[string]bool),
	}
	for _, o := range opts {
		o(w)
	}
	if w.debounce <= 0 {
		return nil, fmt.Errorf("reload: debounce %v is not positive", w.debounce)
	}
	if w.resync <= 0 {
		return nil, fmt.Errorf("reload: resync interval %v is not positive", w.resync)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("reload: start file watcher: %w", err)
	}
	w.fsw = fsw
	w.metrics = newMetrics(reg)
	return w, nil
}

// File holds the current parsed value of one file registered with [Add].
type File[T any] struct {
	name     string
	path     string
	parse    func([]byte) (T, error)
	onChange func(T)
	logger   *slog.Logger
	metrics  *metrics

	current atomic.Pointer[T]

	// Owned by the goroutine running Watcher.Run once Add has returned.
	goodHash    string // hash of the content current was parsed from
	lastAttempt string // hash of the content, or the read error, seen by the last check
}

// Add reads and parses path now and registers it so that [Watcher.Run] reloads it. It returns
// an error naming the file if the file is missing or does not parse, so that start-up fails on
// bad configuration. name is a short fixed label such as "creds", "signing_key", "xkey" or
// "manifest"; it labels the metrics and logs and must be unique within w.
//
// parse must accept the complete content or fail; its error is logged, so it must not quote
// the content. onChange, if non-nil, is called from the goroutine running Run, after the new
// value is in place, with every new value whose content changed and parsed; it should return
// promptly because the next reload waits for it. Add may be called before or while Run runs.
func Add[T any](w *Watcher, name, path string, parse func([]byte) (T, error), onChange func(T)) (*File[T], error) {
	if name == "" {
		return nil, errors.New("reload: empty file name")
	}
	if parse == nil {
		return nil, fmt.Errorf("reload: %s: nil parse function", name)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("reload: %s file %s: %w", name, path, err)
	}
	f := &File[T]{
		name:     name,
		path:     abs,
		parse:    parse,
		onChange: onChange,
		logger:   w.logger,
		metrics:  w.metrics,
	}

	// The lock is not held while calling into fsnotify or reading the file: fsnotify's reader
	// may be waiting for Run, and Run for the lock.
	w.mu.Lock()
	switch {
	case w.stopped:
		w.mu.Unlock()
		return nil, fmt.Errorf("reload: %s file %s: watcher has stopped", name, abs)
	case w.names[name]:
		w.mu.Unlock()
		return nil, fmt.Errorf("reload: %s file %s: name %q already added", name, abs, name)
	}
	w.names[name] = true // reserved until registered or released below
	w.mu.Unlock()

	// Watch before reading, so that a change made after the read below produces an event.
	// Watching a directory again is harmless.
	err = w.fsw.Add(f.dir())
	if err != nil {
		err = fmt.Errorf("reload: %s file %s: watch directory: %w", name, abs, err)
	} else {
		err = f.load()
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil && w.stopped {
		err = fmt.Errorf("reload: %s file %s: watcher has stopped", name, abs)
	}
	if err != nil {
		// A watch added above stays: another Add may be using the directory concurrently, and
		// events in a directory without registered files re-read nothing.
		delete(w.names, name)
		return nil, err
	}
	w.dirs[f.dir()] = true
	w.files = append(w.files, f)
	return f, nil
}

// Current returns the value parsed from the last good content of the file. It is safe for
// concurrent use and never returns a partly loaded value.
func (f *File[T]) Current() T { return *f.current.Load() }

// Path returns the absolute path of the file.
func (f *File[T]) Path() string { return f.path }

func (f *File[T]) dir() string { return filepath.Dir(f.path) }

// load is the initial read and parse done by Add.
func (f *File[T]) load() error {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("reload: %s file: %w", f.name, err)
	}
	v, err := f.parse(data)
	if err != nil {
		return fmt.Errorf("reload: %s file %s: %w", f.name, f.path, err)
	}
	h := hashOf(data)
	f.current.Store(&v)
	f.goodHash, f.lastAttempt = h, h
	m := f.metrics
	m.reloads.WithLabelValues(f.name, resultSuccess) // both series exist from the start
	m.reloads.WithLabelValues(f.name, resultFailure)
	m.lastSuccessTime.WithLabelValues(f.name).SetToCurrentTime()
	m.lastSuccessful.WithLabelValues(f.name).Set(1)
	return nil
}

// check re-reads the file and swaps in its content if it changed and parses. Content (or a
// read error) identical to what the previous check saw is not processed again, so a file that
// stays broken is logged and counted once, not on every event or resync.
func (f *File[T]) check() {
	m := f.metrics
	data, err := os.ReadFile(f.path)
	if err != nil {
		attempt := "read error: " + err.Error()
		if attempt == f.lastAttempt {
			return
		}
		f.lastAttempt = attempt
		f.fail(err)
		return
	}
	h := hashOf(data)
	if h == f.lastAttempt {
		return
	}
	f.lastAttempt = h
	if h == f.goodHash {
		// Back to the content in use after a failed reload: nothing to swap.
		m.lastSuccessful.WithLabelValues(f.name).Set(1)
		f.logger.Info("reload: file is back to the content in use", "file", f.name, "path", f.path, "sha256", shortHash(h))
		return
	}
	v, err := f.parse(data)
	if err != nil {
		f.fail(err)
		return
	}
	f.current.Store(&v)
	f.goodHash = h
	m.lastSuccessTime.WithLabelValues(f.name).SetToCurrentTime()
	m.lastSuccessful.WithLabelValues(f.name).Set(1)
	m.reloads.WithLabelValues(f.name, resultSuccess).Inc()
	f.logger.Info("reload: file reloaded", "file", f.name, "path", f.path, "sha256", shortHash(h))
	if f.onChange != nil {
		f.onChange(v)
	}
}

func (f *File[T]) fail(err error) {
	// The gauge first: whoever sees the failure counted must also see it.
	f.metrics.lastSuccessful.WithLabelValues(f.name).Set(0)
	f.metrics.reloads.WithLabelValues(f.name, resultFailure).Inc()
	f.logger.Error("reload: file not reloaded, keeping the previous value", "file", f.name, "path", f.path, "error", err)
}

// Run watches until ctx is done and returns nil then. It may be called once; when it returns,
// the fsnotify watcher is closed and every goroutine started for it has exited.
func (w *Watcher) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.running || w.stopped {
		w.mu.Unlock()
		return errors.New("reload: Run called more than once")
	}
	w.running = true
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.stopped = true
		w.mu.Unlock()
		_ = w.fsw.Close() // closing an inotify descriptor does not fail in a way we could act on
	}()

	var (
		dirty        = make(map[string]bool) // directories with events since the last re-read
		pendingSince time.Time               // first event of the current burst; zero if none
		lost         = make(map[string]bool) // watched directories that disappeared
		backoff      time.Duration           // next delay before re-watching lost directories
	)
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	defer flush.Stop()
	rewatch := time.NewTimer(time.Hour)
	rewatch.Stop()
	defer rewatch.Stop()
	resync := time.NewTicker(w.resync)
	defer resync.Stop()

	// markDirty schedules a re-read of dir once its events have been quiet for the debounce
	// period, but no later than maxDebounceFactor periods after the burst began.
	markDirty := func(dir string) {
		dirty[dir] = true
		now := time.Now()
		if pendingSince.IsZero() {
			pendingSince = now
		}
		wait := w.debounce
		if deadline := pendingSince.Add(maxDebounceFactor * w.debounce); now.Add(wait).After(deadline) {
			wait = max(deadline.Sub(now), 0)
		}
		flush.Reset(wait)
	}
	// tryRewatch watches the lost directories that exist again and schedules the next attempt
	// for the others, with a growing, jittered delay.
	tryRewatch := func() {
		for dir := range lost {
			if err := w.fsw.Add(dir); err != nil {
				continue
			}
			delete(lost, dir)
			w.logger.Info("reload: watching directory again", "dir", dir)
			markDirty(dir) // its files may have changed while it was not watched
		}
		if len(lost) == 0 {
			backoff = 0
			return
		}
		if backoff == 0 {
			backoff = w.debounce
		}
		rewatch.Reset(jitter(backoff))
		backoff = min(2*backoff, maxRewatchBackoff)
	}
	loseDir := func(dir string) {
		if lost[dir] {
			return
		}
		// A moved directory keeps its inotify watch at the new place; drop it.
		_ = w.fsw.Remove(dir)
		lost[dir] = true
		w.logger.Warn("reload: watched directory disappeared, waiting for it to come back", "dir", dir)
	}

	for {
		select {
		case <-ctx.Done():
			return nil

		case ev, ok := <-w.fsw.Events:
			if !ok {
				return errors.New("reload: file watcher closed unexpectedly")
			}
			if w.watches(ev.Name) && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				loseDir(ev.Name)
				tryRewatch()
				continue
			}
			// Anything else in a watched directory may have changed one of its files.
			markDirty(filepath.Dir(ev.Name))
			if w.watches(ev.Name) {
				markDirty(ev.Name) // an event about the directory itself, or from a watched parent
			}

		case err, ok := <-w.fsw.Errors:
			if !ok {
				return errors.New("reload: file watcher closed unexpectedly")
			}
			w.logger.Warn("reload: file watcher error, re-reading all files", "error", err)
			for _, dir := range w.watchedDirs() {
				markDirty(dir)
			}

		case <-flush.C:
			pendingSince = time.Time{}
			for _, f := range w.snapshot() {
				if dirty[f.dir()] {
					f.check()
				}
			}
			clear(dirty)

		case <-rewatch.C:
			tryRewatch()

		case <-resync.C:
			// The safety net: a watch may have vanished without an event we understood.
			watched := make(map[string]bool)
			for _, dir := range w.fsw.WatchList() {
				watched[dir] = true
			}
			for _, dir := range w.watchedDirs() {
				if !watched[dir] && !lost[dir] {
					loseDir(dir)
				}
			}
			if len(lost) > 0 {
				tryRewatch()
			}
			for _, f := range w.snapshot() {
				f.check()
			}
		}
	}
}

// watches reports whether path is a directory registered by Add.
func (w *Watcher) watches(path string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dirs[path]
}

func (w *Watcher) watchedDirs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	dirs := make([]string, 0, len(w.dirs))
	for dir := range w.dirs {
		dirs = append(dirs, dir)
	}
	return dirs
}

func (w *Watcher) snapshot() []reloader {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]reloader(nil), w.files...)
}

// jitter spreads d by ±20% so that the sidecars of many pods do not retry in step.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64())) //nolint:gosec // timing jitter, not a secret
}

func hashOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// shortHash is enough of a content hash to tell versions apart in logs.
func shortHash(h string) string { return h[:12] }

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
