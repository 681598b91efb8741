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

// Clip returns s cut to at most n bytes on a character boundary, followed by a marker giving
// the full length; s itself when it is short enough. Whatever echoes input into a log line or
// an error (this package, and callout for requests) clips it with this.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:runeCut(s, n)] + truncated(len(s))
}

// runeCut is the largest cut of s at or below n bytes that ends on a character boundary.
func runeCut(s string, n int) int {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// truncated marks a value shortened from size bytes.
func truncated(size int) string { return "…[truncated, " + strconv.Itoa(size) + " bytes]" }

// quote quotes s for a message (escaping what does not print), shortened to maxEcho bytes
// when longer.
func quote(s string) string {
	if len(s) <= maxEcho {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:runeCut(s, maxEcho)]) + truncated(len(s))
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
