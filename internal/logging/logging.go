// Package logging builds the service's structured logger and routes client-go's klog output
// into it.
package logging

import (
	"context"
	"io"
	"log/slog"
	"sync"

	"k8s.io/klog/v2"
)

// New returns a JSON (format "json") or text logger writing records at level and above to w.
func New(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// klogRouted makes RouteKlog act once per process.
var klogRouted sync.Once

// RouteKlog sends client-go's klog output into log (the service's structured log) rather than
// klog's own format. klog's logger is process-wide and must not change while informers log, so
// the first call wins (one service per process; tests run several).
func RouteKlog(log *slog.Logger) {
	klogRouted.Do(func() { klog.SetSlogLogger(slog.New(infoAndAbove{log.Handler()})) })
}

// infoAndAbove passes on records at info level or above only: client-go's verbose klog lines
// (V-levels, which map below debug) stay out of the service's log even at LOG_LEVEL=debug.
type infoAndAbove struct{ slog.Handler }

func (h infoAndAbove) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo && h.Handler.Enabled(ctx, l)
}

func (h infoAndAbove) WithAttrs(attrs []slog.Attr) slog.Handler {
	return infoAndAbove{h.Handler.WithAttrs(attrs)}
}

func (h infoAndAbove) WithGroup(name string) slog.Handler {
	return infoAndAbove{h.Handler.WithGroup(name)}
}
