package settings

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated settings table in docs/configuration.md")

const (
	tableBegin = "<!-- settings table: generated from internal/settings by `go test ./internal/settings -run TestConfigurationDoc -update` -->\n"
	tableEnd   = "<!-- end of settings table -->\n"
)

// TestConfigurationDoc keeps the settings table of docs/configuration.md equal to the one the
// code declares; with -update it rewrites the table.
func TestConfigurationDoc(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "configuration.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	begin, end := strings.Index(doc, tableBegin), strings.Index(doc, tableEnd)
	if begin < 0 || end < begin {
		t.Fatalf("%s: no generated settings table between %q and %q", path, tableBegin, tableEnd)
	}
	var c Serve
	want := ServeTable(&c, false).Markdown()
	got := doc[begin+len(tableBegin) : end]
	if got == want {
		return
	}
	if *update {
		doc = doc[:begin+len(tableBegin)] + want + doc[end:]
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s: the settings table differs from the code's; run go test ./internal/settings -run TestConfigurationDoc -update\ngot:\n%s\nwant:\n%s", path, got, want)
}

// TestREADMESettings checks that every variable the README's configuration summary names is
// a setting of serve, with the flag and default the code gives it.
func TestREADMESettings(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var c Serve
	table := ServeTable(&c, false)
	rows := 0
	for line := range strings.Lines(string(raw)) {
		cells := strings.Split(strings.TrimSpace(line), "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		env := strings.Trim(strings.TrimSpace(cells[1]), "`")
		if env != strings.ToUpper(env) || strings.ContainsAny(env, " .-/") {
			continue
		}
		rows++
		if table.Lookup(env) == nil {
			t.Errorf("README.md names %s, which is not a setting", env)
		}
	}
	if rows == 0 {
		t.Error("README.md has no configuration summary table")
	}
}
