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
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
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

	st := &runState{w: w, dirty: map[string]bool{}, lost: map[string]bool{}}
	st.flush = time.NewTimer(time.Hour)
	st.flush.Stop()
	defer st.flush.Stop()
	st.rewatch = time.NewTimer(time.Hour)
	st.rewatch.Stop()
	defer st.rewatch.Stop()
	resync := time.NewTicker(w.resync)
	defer resync.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil

		case ev, ok := <-w.fsw.Events:
			if !ok {
				return errors.New("reload: file watcher closed unexpectedly")
			}
			if w.watches(ev.Name) && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				st.loseDir(ev.Name)
				st.tryRewatch()
				continue
			}
			// Anything else in a watched directory may have changed one of its files.
			st.markDirty(filepath.Dir(ev.Name))
			if w.watches(ev.Name) {
				st.markDirty(ev.Name) // an event about the directory itself, or from a watched parent
			}

		case err, ok := <-w.fsw.Errors:
			if !ok {
				return errors.New("reload: file watcher closed unexpectedly")
			}
			w.logger.Warn("reload: file watcher error, re-reading all files", "error", err)
			for _, dir := range w.watchedDirs() {
				st.markDirty(dir)
			}

		case <-st.flush.C:
			st.pendingSince = time.Time{}
			for _, f := range w.snapshot() {
				if st.dirty[f.dir()] {
					f.check()
				}
			}
			clear(st.dirty)

		case <-st.rewatch.C:
			st.tryRewatch()

		case <-resync.C:
			st.resync()
		}
	}
}

// runState is what Run keeps between events; only Run's goroutine touches it.
type runState struct {
	w            *Watcher
	dirty        map[string]bool // directories with events since the last re-read
	pendingSince time.Time       // first event of the current burst; zero if none
	lost         map[string]bool // watched directories that disappeared
	backoff      time.Duration   // next delay before re-watching lost directories
	flush        *time.Timer     // fires when the current burst has settled
	rewatch      *time.Timer     // fires when lost directories are to be tried again
}

// markDirty schedules a re-read of dir once its events have been quiet for the debounce
// period, but no later than maxDebounceFactor periods after the burst began.
func (st *runState) markDirty(dir string) {
	st.dirty[dir] = true
	now := time.Now()
	if st.pendingSince.IsZero() {
		st.pendingSince = now
	}
	wait := st.w.debounce
	if deadline := st.pendingSince.Add(maxDebounceFactor * st.w.debounce); now.Add(wait).After(deadline) {
		wait = max(deadline.Sub(now), 0)
	}
	st.flush.Reset(wait)
}

// tryRewatch watches the lost directories that exist again and schedules the next attempt
// for the others, with a growing, jittered delay.
func (st *runState) tryRewatch() {
	for dir := range st.lost {
		if err := st.w.fsw.Add(dir); err != nil {
			continue
		}
		delete(st.lost, dir)
		st.w.logger.Info("reload: watching directory again", "dir", dir)
		st.markDirty(dir) // its files may have changed while it was not watched
	}
	if len(st.lost) == 0 {
		st.backoff = 0
		return
	}
	if st.backoff == 0 {
		st.backoff = st.w.debounce
	}
	st.rewatch.Reset(jitter(st.backoff))
	st.backoff = min(2*st.backoff, maxRewatchBackoff)
}

func (st *runState) loseDir(dir string) {
	if st.lost[dir] {
		return
	}
	// A moved directory keeps its inotify watch at the new place; drop it.
	_ = st.w.fsw.Remove(dir)
	st.lost[dir] = true
	st.w.logger.Warn("reload: watched directory disappeared, waiting for it to come back", "dir", dir)
}

// resync is the safety net: a watch may have vanished without an event we understood, so
// every watch is checked and every file re-read.
func (st *runState) resync() {
	watched := make(map[string]bool)
	for _, dir := range st.w.fsw.WatchList() {
		watched[dir] = true
	}
	for _, dir := range st.w.watchedDirs() {
		if !watched[dir] && !st.lost[dir] {
			st.loseDir(dir)
		}
	}
	if len(st.lost) > 0 {
		st.tryRewatch()
	}
	for _, f := range st.w.snapshot() {
		f.check()
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
