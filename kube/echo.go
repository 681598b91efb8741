package kube

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Whatever a client controls (a token's kid, issuer, audience, subject, a ServiceAccount's
// annotations) is echoed in errors and logs only shortened: a 16 KiB kid must not become a
// 16 KiB log line.

// maxEcho bounds one value quoted in a message.
const maxEcho = 64

// maxEchoList bounds how many values of a list are quoted in a message.
const maxEchoList = 4

// clip returns s cut to at most n bytes on a character boundary, followed by a marker giving
// the full length; s itself when it is short enough.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…[truncated, " + strconv.Itoa(len(s)) + " bytes]"
}

// quote quotes s for a message (escaping what does not print), shortened to maxEcho bytes
// when longer.
func quote(s string) string {
	if len(s) <= maxEcho {
		return strconv.Quote(s)
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…[truncated, " + strconv.Itoa(len(s)) + " bytes]"
}

// quoteList quotes the first maxEchoList values of l, each with quote, as %q prints a list.
func quoteList(l []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range l {
		if i == maxEchoList {
			b.WriteString(" …and " + strconv.Itoa(len(l)-i) + " more")
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(quote(s))
	}
	b.WriteByte(']')
	return b.String()
}

// quoteFunc defers quote until a message is formatted.
type quoteFunc string

func (q quoteFunc) String() string { return quote(string(q)) }
