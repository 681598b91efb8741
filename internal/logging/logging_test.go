package logging

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	var b bytes.Buffer
	New(&b, slog.LevelInfo, "json").Debug("hidden")
	New(&b, slog.LevelInfo, "json").Info("shown", "k", "v")
	if got := b.String(); strings.Contains(got, "hidden") || !strings.Contains(got, `"msg":"shown","k":"v"`) {
		t.Errorf("json logger wrote %q", got)
	}
	b.Reset()
	New(&b, slog.LevelDebug, "text").Debug("shown")
	if got := b.String(); !strings.Contains(got, "level=DEBUG msg=shown") {
		t.Errorf("text logger wrote %q", got)
	}
}

// TestInfoAndAbove checks that client-go's verbose lines stay out even at debug level.
func TestInfoAndAbove(t *testing.T) {
	var b bytes.Buffer
	h := infoAndAbove{slog.NewJSONHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug - 4})}
	ctx := context.Background()
	if h.Enabled(ctx, slog.LevelDebug) || h.Enabled(ctx, slog.LevelDebug-1) {
		t.Error("a record below info passes")
	}
	if !h.Enabled(ctx, slog.LevelInfo) || !h.WithAttrs(nil).Enabled(ctx, slog.LevelWarn) || !h.WithGroup("g").Enabled(ctx, slog.LevelError) {
		t.Error("a record at info or above is held back")
	}
}
