package main

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// TestDocs keeps README.md and docs/*.md true to the code. The docs quote the service's
// output in forms this test can find:
//
//   - a log message as it appears in the JSON log: `"msg":"signing keys reloaded"`, inline or in
//     a JSON example;
//   - /readyz output: a line (in a code block or a code span) starting with "[+] ", "[-] " or
//     "[!] ", e.g. `[-] jwks: no JWKS keys loaded from <JWKS_URL>`;
//   - troubleshooting.md's tables: the code spans of the first column are messages or reason
//     labels; a row whose second column starts with "nats-server" quotes nats-server, whose
//     source in the module cache is checked instead of this repository's;
//   - metric names (nats_callout_...) anywhere, and alert names (NatsCallout...), which
//     helm-values/prometheusrule.yaml must define;
//   - configuration.md's "## Settings" table: the variables and flags.
//
// In a quoted message, <...> (or …) stands for a value: the text between placeholders must
// occur in a Go string literal of a non-test file of this repository. The test also checks
// that every relative link (and its #anchor) leads somewhere, and that README.md stays a
// landing page: at most 300 lines, `make demo` and `make test` on its first screen, a link to
// every page of docs/.
func TestDocs(t *testing.T) {
	docs := readDocs(t)
	code := repoLiterals(t, ".")

	t.Run("log messages", func(t *testing.T) {
		n := 0
		for _, d := range docs {
			for _, m := range logMessages(d.text) {
				code.requireMessage(t, d.name, "log message", m)
				n++
			}
		}
		if n == 0 {
			t.Error("the docs quote no log message as \"msg\":\"...\"; has the convention changed?")
		}
	})

	t.Run("readiness lines", func(t *testing.T) {
		n := 0
		for _, d := range docs {
			for _, line := range readinessLines(d.text) {
				code.requireReadiness(t, d.name, line)
				n++
			}
		}
		if n == 0 {
			t.Error("the docs show no /readyz line ([+] ..., [-] ..., [!] ...); has the convention changed?")
		}
	})

	t.Run("troubleshooting messages", func(t *testing.T) {
		d := docs.find(t, "docs/troubleshooting.md")
		var natsServer *literals
		rows := tableRows(d.text, func(string) bool { return true })
		if len(rows) == 0 {
			t.Fatalf("%s: no tables", d.name)
		}
		for _, row := range rows {
			if len(row) < 2 {
				continue
			}
			for _, m := range codeSpans(row[0]) {
				if !strings.HasPrefix(strings.TrimSpace(row[1]), "nats-server") {
					code.requireMessage(t, d.name, "message", m)
					continue
				}
				if natsServer == nil {
					natsServer = natsServerSource(t)
				}
				if natsServer.empty() {
					continue // logged once by natsServerSource
				}
				natsServer.requireMessage(t, d.name, "nats-server message", m)
			}
		}
	})

	t.Run("metric names", func(t *testing.T) {
		for _, d := range docs {
			for _, m := range metricRE.FindAllString(d.text, -1) {
				name := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if n, ok := strings.CutSuffix(m, suffix); ok && code.exact[n] {
						name = n
					}
				}
				if !code.exact[name] {
					t.Errorf("%s: metric %s is not registered by the code (no Go string literal %q)", d.name, m, m)
				}
			}
		}
	})

	t.Run("alert names", func(t *testing.T) {
		rules, err := os.ReadFile(filepath.Join("helm-values", "prometheusrule.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			for _, a := range alertRE.FindAllString(d.text, -1) {
				if !strings.Contains(string(rules), "alert: "+a+"\n") {
					t.Errorf("%s: alert %s is not in helm-values/prometheusrule.yaml", d.name, a)
				}
			}
		}
	})

	t.Run("settings table", func(t *testing.T) {
		d := docs.find(t, "docs/configuration.md")
		section := sectionText(d.text, "## Settings")
		if section == "" {
			t.Fatalf("%s: no \"## Settings\" section", d.name)
		}
		rows := tableRows(section, func(header string) bool {
			return strings.HasPrefix(header, "| Variable | Flag | Default | Meaning |")
		})
		if len(rows) == 0 {
			t.Fatalf("%s: the Settings section has no | Variable | Flag | Default | Meaning | table", d.name)
		}
		for _, row := range rows {
			if len(row) < 4 {
				t.Errorf("%s: settings row with %d columns: %q", d.name, len(row), row)
				continue
			}
			vars := codeSpans(row[0])
			if len(vars) != 1 {
				t.Errorf("%s: settings row %q: want one variable in the first column", d.name, row[0])
			}
			for _, v := range vars {
				if !code.exact[v] {
					t.Errorf("%s: setting %s is not in the code (no Go string literal %q)", d.name, v, v)
				}
			}
			for _, f := range codeSpans(row[1]) {
				name, ok := strings.CutPrefix(f, "--")
				if !ok || !code.exact[name] {
					t.Errorf("%s: flag %s of %v is not in the code (no Go string literal %q)", d.name, f, vars, name)
				}
			}
		}
	})

	t.Run("links", func(t *testing.T) {
		for _, d := range docs {
			for _, target := range links(d.text) {
				checkLink(t, d, target)
			}
		}
	})

	t.Run("README is a landing page", func(t *testing.T) {
		d := docs.find(t, "README.md")
		lines := strings.Split(strings.TrimSuffix(d.text, "\n"), "\n")
		if len(lines) > 300 {
			t.Errorf("README.md has %d lines, at most 300: move the detail to a page in docs/", len(lines))
		}
		linked := map[string]bool{}
		for _, target := range links(d.text) {
			file, _, _ := strings.Cut(target, "#")
			linked[file] = true
		}
		for _, p := range docs[1:] {
			if !linked[p.name] {
				t.Errorf("README.md does not link to %s", p.name)
			}
		}
		first := strings.Join(lines[:min(len(lines), 30)], "\n")
		for _, cmd := range []string{"make demo", "make test"} {
			if !strings.Contains(first, cmd) {
				t.Errorf("README.md: %q is not on the first screen (first 30 lines)", cmd)
			}
		}
	})
}

type doc struct {
	name string // slash-separated, relative to the repository root
	text string
}

type docSet []doc

func (ds docSet) find(t *testing.T, name string) doc {
	t.Helper()
	for _, d := range ds {
		if d.name == name {
			return d
		}
	}
	t.Fatalf("%s does not exist", name)
	return doc{}
}

func readDocs(t *testing.T) docSet {
	t.Helper()
	names, err := filepath.Glob(filepath.Join("docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	var ds docSet
	for _, n := range append([]string{"README.md"}, names...) {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, doc{name: filepath.ToSlash(n), text: string(b)})
	}
	return ds
}

var (
	// msgRE finds "msg":"..." as the JSON log writes it.
	msgRE = regexp.MustCompile(`"msg":\s*"((?:[^"\\]|\\.)*)"`)
	// readinessRE is one /readyz line: [+] NAME ok, [-] NAME: ERROR or [!] NAME: TEXT.
	readinessRE = regexp.MustCompile(`^\[([+!-])\] ([a-z_]+)(?: ok|: (.+))$`)
	// placeholderRE is a value in a quoted message.
	placeholderRE = regexp.MustCompile(`<[^<>]+>|…`)
	labelRE       = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	metricRE      = regexp.MustCompile(`\bnats_callout_[a-z0-9_]*[a-z0-9]`)
	alertRE       = regexp.MustCompile(`\bNatsCallout[A-Za-z]+`)
	codeSpanRE    = regexp.MustCompile("`([^`]+)`")
	linkRE        = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
)

func logMessages(text string) []string {
	var out []string
	for _, m := range msgRE.FindAllStringSubmatch(text, -1) {
		s, err := strconv.Unquote(`"` + m[1] + `"`)
		if err != nil {
			s = m[1]
		}
		out = append(out, s)
	}
	return out
}

// readinessLines returns the /readyz lines of text: lines of code blocks and code spans that
// start with [+], [-] or [!].
func readinessLines(text string) []string {
	var out []string
	inFence := false
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, "\n")
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			if readinessRE.MatchString(trimmed) {
				out = append(out, trimmed)
			}
			continue
		}
	}
	for _, s := range codeSpans(withoutFences(text)) {
		if readinessRE.MatchString(s) {
			out = append(out, s)
		}
	}
	return out
}

// codeSpans returns the inline code spans of text, whitespace runs (line breaks) made single
// spaces.
func codeSpans(text string) []string {
	var out []string
	for _, m := range codeSpanRE.FindAllStringSubmatch(text, -1) {
		out = append(out, strings.Join(strings.Fields(m[1]), " "))
	}
	return out
}

// withoutFences returns text without its fenced code blocks.
func withoutFences(text string) string {
	var b strings.Builder
	inFence := false
	for line := range strings.Lines(text) {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if !inFence {
			b.WriteString(line)
		}
	}
	return b.String()
}

// sectionText returns the text under heading, up to the next heading of the same or a
// higher level.
func sectionText(text, heading string) string {
	level := strings.Index(heading, " ")
	var b strings.Builder
	in := false
	for line := range strings.Lines(withoutFences(text)) {
		l := strings.TrimRight(line, "\n")
		if strings.HasPrefix(l, "#") {
			n := strings.IndexFunc(l, func(r rune) bool { return r != '#' })
			if in && n > 0 && n <= level {
				break
			}
			if l == heading {
				in = true
				continue
			}
		}
		if in {
			b.WriteString(line)
		}
	}
	return b.String()
}

// tableRows returns the body rows of the Markdown tables in text whose header row keep
// accepts, as trimmed cells.
func tableRows(text string, keep func(header string) bool) [][]string {
	var rows [][]string
	lines := strings.Split(withoutFences(text), "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "|") || i+1 >= len(lines) || !isSeparatorRow(lines[i+1]) {
			continue
		}
		take := keep(lines[i])
		i += 2
		for ; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
			if take {
				rows = append(rows, splitRow(lines[i]))
			}
		}
	}
	return rows
}

func isSeparatorRow(line string) bool {
	cells := splitRow(line)
	if len(cells) == 0 {
		return false
	}
	for _, c := range cells {
		if strings.Trim(c, "-: ") != "" {
			return false
		}
	}
	return true
}

// splitRow splits a table row into cells; `\|` is a pipe inside a cell.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(strings.TrimSuffix(line, "|"), "|")
	parts := strings.Split(strings.ReplaceAll(line, `\|`, "\x00"), "|")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(strings.ReplaceAll(p, "\x00", "|"))
	}
	return parts
}

// literals are the Go string literals of a source tree, or (for nats-server) its raw text.
type literals struct {
	where string
	all   []string
	exact map[string]bool
	// fromSource is set when all holds whole files rather than string literals.
	fromSource bool
}

func (l *literals) empty() bool { return len(l.all) == 0 }

// contains reports whether fragment occurs in one literal.
func (l *literals) contains(fragment string) bool {
	for _, s := range l.all {
		if strings.Contains(s, fragment) {
			return true
		}
	}
	return false
}

// requireMessage checks a quoted message: each piece between placeholders occurs in one
// string of the code. A label (a reason such as serviceaccount_not_found) must be a whole
// string literal.
func (l *literals) requireMessage(t *testing.T, docName, kind, msg string) {
	t.Helper()
	l.requireQuoted(t, docName, kind, msg, msg)
}

// requireQuoted checks text, a message or the part of a quoted line that is one.
func (l *literals) requireQuoted(t *testing.T, docName, kind, quoted, text string) {
	t.Helper()
	if labelRE.MatchString(text) && !l.fromSource {
		if !l.exact[text] {
			t.Errorf("%s: %s %q is not in %s (no string literal %q)", docName, kind, quoted, l.where, text)
		}
		return
	}
	for _, f := range placeholderRE.Split(text, -1) {
		f = strings.TrimSpace(f)
		if len([]rune(f)) < 3 {
			continue
		}
		if !l.contains(f) {
			t.Errorf("%s: %s %q is not in %s (no string contains %q)", docName, kind, quoted, l.where, f)
			return
		}
	}
}

// requireReadiness checks a /readyz line: its check name is the code's, and its text too.
func (l *literals) requireReadiness(t *testing.T, docName, line string) {
	t.Helper()
	m := readinessRE.FindStringSubmatch(line)
	mark, name, rest := m[1], m[2], m[3]
	if !l.exact[name] && !l.contains("["+mark+"] "+name+": ") {
		t.Errorf("%s: /readyz line %q: the code has no readiness check or warning %q", docName, line, name)
		return
	}
	if rest == "" {
		return
	}
	if l.contains("[" + mark + "] " + name + ": ") {
		// A warning line written whole by the code: check it as one message.
		l.requireMessage(t, docName, "/readyz line", line)
		return
	}
	l.requireQuoted(t, docName, "/readyz line", line, rest)
}

// repoLiterals collects the string literals of the repository's non-test Go files, skipping
// e2e/tools (build pins, not the product) and hidden directories. Constant concatenations
// ("a" + "b") count whole as well as in parts.
func repoLiterals(t *testing.T, root string) *literals {
	t.Helper()
	l := &literals{where: "the code", exact: map[string]bool{}}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := e.Name()
		if e.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || filepath.ToSlash(path) == "e2e/tools") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
		if err != nil {
			// A file being edited: its text still tells whether a message is there.
			l.add(string(src))
			return nil //nolint:nilerr // an unparsable file is read as text, not an error

		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if n.Kind == token.STRING {
					if s, err := strconv.Unquote(n.Value); err == nil {
						l.add(s)
					}
				}
			case *ast.BinaryExpr:
				if s, ok := constString(n); ok {
					l.add(s)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if l.empty() {
		t.Fatal("no Go string literals found: run the test from the repository root")
	}
	return l
}

func (l *literals) add(s string) {
	l.all = append(l.all, s)
	l.exact[s] = true
}

// constString evaluates a concatenation of string literals.
func constString(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.ParenExpr:
		return constString(e.X)
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		a, ok := constString(e.X)
		if !ok {
			return "", false
		}
		b, ok := constString(e.Y)
		return a + b, ok
	}
	return "", false
}

// natsServerSource is the text of the non-test Go files of the nats-server module this
// repository requires, from the module cache. Missing from the cache, the checks against it
// are skipped (and logged).
func natsServerSource(t *testing.T) *literals {
	t.Helper()
	l := &literals{exact: map[string]bool{}, fromSource: true}
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	const path = "github.com/nats-io/nats-server/v2"
	version := ""
	sc := bufio.NewScanner(strings.NewReader(string(mod)))
	for sc.Scan() {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		if len(f) >= 2 && f[0] == path {
			version = f[1]
		}
	}
	if version == "" {
		t.Fatalf("go.mod does not require %s", path)
	}
	l.where = path + "@" + version
	cache := os.Getenv("GOMODCACHE")
	if cache == "" {
		out, err := exec.Command("go", "env", "GOMODCACHE").Output()
		if err != nil {
			t.Logf("cannot find the module cache (%v): nats-server's messages not checked", err)
			return l
		}
		cache = strings.TrimSpace(string(out))
	}
	dir := filepath.Join(cache, filepath.FromSlash(escapeModulePath(path)+"@"+version), "server")
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Logf("%s is not in the module cache (%s): nats-server's messages not checked", l.where, dir)
		return l
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		l.add(string(b))
	}
	return l
}

// escapeModulePath is the module cache's form of a path: upper-case letters as !lower-case.
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// links returns the targets of the Markdown links of text outside code blocks and spans.
func links(text string) []string {
	var out []string
	for _, m := range linkRE.FindAllStringSubmatch(codeSpanRE.ReplaceAllString(withoutFences(text), ""), -1) {
		out = append(out, m[1])
	}
	return out
}

// checkLink checks a relative link of d: the file exists, and a #fragment names a heading of
// the Markdown file it points to.
func checkLink(t *testing.T, d doc, target string) {
	t.Helper()
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return
	}
	file, anchor, _ := strings.Cut(target, "#")
	path := d.name
	if file != "" {
		path = filepath.ToSlash(filepath.Join(filepath.Dir(filepath.FromSlash(d.name)), filepath.FromSlash(file)))
		if _, err := os.Stat(filepath.FromSlash(path)); err != nil {
			t.Errorf("%s: link %q: %s does not exist", d.name, target, path)
			return
		}
	}
	if anchor == "" || !strings.HasSuffix(path, ".md") {
		return
	}
	b, err := os.ReadFile(filepath.FromSlash(path))
	if err != nil {
		t.Errorf("%s: link %q: %v", d.name, target, err)
		return
	}
	if !headingAnchors(string(b))[anchor] {
		t.Errorf("%s: link %q: %s has no heading with anchor #%s", d.name, target, path, anchor)
	}
}

// headingAnchors returns the anchors GitHub gives the headings of a Markdown text: lower
// case, punctuation other than - and _ dropped, spaces as -, repeats numbered -1, -2, ...
func headingAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	for line := range strings.Lines(withoutFences(text)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
				b.WriteRune(r)
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			seen[a]++
			a = fmt.Sprintf("%s-%d", a, n)
		} else {
			seen[a] = 1
		}
		anchors[a] = true
	}
	return anchors
}
