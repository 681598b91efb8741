package reload

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
)

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

func hashOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// shortHash is enough of a content hash to tell versions apart in logs.
func shortHash(h string) string { return h[:12] }
