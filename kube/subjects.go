package kube

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// limit is a rendered annotation subject limit, split into tokens once per policy.
type limit struct {
	patterns []string
	tokens   [][]string
}

func newLimit(patterns []string) *limit {
	l := &limit{patterns: patterns}
	for _, p := range patterns {
		l.tokens = append(l.tokens, strings.Split(p, "."))
	}
	return l
}

// allows reports whether the valid subject pattern, split into tokens, lies within one of the
// limit's patterns, or the limit is empty.
func (l *limit) allows(pt []string) bool {
	if len(l.patterns) == 0 {
		return true
	}
	for _, lt := range l.tokens {
		if tokensWithin(pt, lt) {
			return true
		}
	}
	return false
}

func (l *limit) String() string { return strings.Join(l.patterns, ",") }

// maxWarnings keeps a ServiceAccount with thousands of bad entries from flooding the log.
const maxWarnings = 10

// warnings collects up to maxWarnings messages and counts the rest.
type warnings struct {
	msgs    []string
	dropped int
}

// addf records a message, formatted only if it is kept: the ones beyond maxWarnings are
// just counted.
func (w *warnings) addf(format string, args ...any) {
	if len(w.msgs) < maxWarnings {
		w.msgs = append(w.msgs, fmt.Sprintf(format, args...))
		return
	}
	w.dropped++
}

func (w *warnings) list() []string {
	if w.dropped > 0 {
		return append(w.msgs, fmt.Sprintf("%d more warnings", w.dropped))
	}
	return w.msgs
}

// entries yields the whitespace-trimmed, non-empty comma-separated entries of v.
func entries(v string) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		for e := range strings.SplitSeq(v, ",") {
			if e = strings.TrimSpace(e); e != "" && !yield(e) {
				return
			}
		}
	}
}

// validSubject accepts a NATS subject usable in a permission: dot-separated non-empty tokens,
// '*' and '>' only as whole tokens and '>' only last, valid UTF-8 without whitespace, control
// or invisible characters (see checkRune). It is stricter than nats-server, which reads "foo*" as a literal token: here
// that is almost certainly a mistake, so it is refused.
func validSubject(s string) error {
	_, err := subjectTokens(s, nil)
	return err
}

// subjectTokens checks s as validSubject does and appends its tokens to buf[:0], so that a
// caller checking many subjects reuses one slice.
func subjectTokens(s string, buf []string) ([]string, error) {
	switch {
	case s == "":
		return nil, errors.New("empty subject")
	case len(s) > maxSubjectBytes:
		return nil, fmt.Errorf("longer than %d bytes", maxSubjectBytes)
	case !utf8.ValidString(s):
		return nil, errors.New("not valid UTF-8")
	}
	tokens := buf[:0]
	for rest, more := s, true; more; {
		var t string
		t, rest, more = strings.Cut(rest, ".")
		switch {
		case t == "":
			return nil, errors.New("empty token")
		case t == ">" && more:
			return nil, errors.New("'>' must be the last token")
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return nil, fmt.Errorf("wildcard inside token %s", quote(t))
		}
		for _, r := range t {
			if err := checkRune(r); err != nil {
				return nil, err
			}
		}
		tokens = append(tokens, t)
	}
	return tokens, nil
}

// checkRune refuses a character that does not show as itself: a subject that reads like
// another in a manifest, a log or `kubectl describe` but is not the same subject. A deny entry
// "team-a.secret.>" with a zero-width joiner in it denies nothing. Refused are whitespace and
// control characters; invisible ones (Unicode format characters such as zero-width joiners,
// bidi controls and soft hyphens, variation selectors and the other default-ignorable code
// points such as Hangul fillers); and private-use and unassigned code points, whose look is
// nobody's to know. ASCII letters, digits and punctuation pass at once.
func checkRune(r rune) error {
	switch {
	case r > ' ' && r < 0x7f:
		return nil
	case r <= ' ' || r == 0x7f || unicode.IsSpace(r) || unicode.In(r, unicode.Cc, unicode.Zs, unicode.Zl, unicode.Zp):
		return fmt.Errorf("whitespace or control character %U", r)
	case unicode.In(r, unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point):
		return fmt.Errorf("invisible character %U", r)
	case r == utf8.RuneError || unicode.Is(unicode.Co, r) || !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S):
		return fmt.Errorf("private-use or unassigned character %U", r)
	}
	return nil
}
