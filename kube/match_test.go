package kube

import (
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

func TestSubjectMatches(t *testing.T) {
	tests := []struct {
		pattern, subject string
		want             bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
		{"a.b", "a.b.c", false},
		{"a.*", "a.b", true},
		{"a.*", "a", false},
		{"a.*", "a.b.c", false},
		{"a.>", "a.b", true},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{">", "a", true},
		{"*.b.>", "x.b.c", true},
		{"*.b.>", "x.c.c", false},
		{"_INBOX_ns_sa.>", "_INBOX_ns_sa.abc.1", true},
		{"_INBOX_ns_sa.>", "_INBOX.abc.1", false},
	}
	for _, tt := range tests {
		if got := subjectMatches(tt.pattern, tt.subject); got != tt.want {
			t.Errorf("subjectMatches(%q, %q) = %v, want %v", tt.pattern, tt.subject, got, tt.want)
		}
		// nats-server is the authority on what matches.
		if srv := server.SubjectMatchesFilter(tt.subject, tt.pattern); srv != tt.want {
			t.Errorf("nats-server says %q matches %q: %v; the table says %v", tt.subject, tt.pattern, srv, tt.want)
		}
	}
}

func TestPermissionsAllows(t *testing.T) {
	p := Permissions{
		PubAllow: []string{"shop.>", "billing.charges.create"},
		PubDeny:  []string{"shop.admin.>"},
		SubAllow: []string{"shop.>", "_INBOX_shop_orders.>"},
		SubDeny:  []string{"shop.secret"},
	}
	pub := map[string]bool{
		"shop.orders.created":    true,
		"billing.charges.create": true,
		"billing.refunds.create": false,
		"shop.admin.reset":       false, // denied although shop.> allows it
		"shop.*":                 false, // not a literal subject
		"":                       false,
		"shop..x":                false,
	}
	for s, want := range pub {
		if got := p.AllowsPublish(s); got != want {
			t.Errorf("AllowsPublish(%q) = %v, want %v", s, got, want)
		}
	}
	sub := map[string]bool{
		"shop.orders.created":      true,
		"shop.secret":              false,
		"_INBOX_shop_orders.abc.1": true,
		"_INBOX.abc.1":             false,
		"billing.charges.create":   false,
	}
	for s, want := range sub {
		if got := p.AllowsSubscribe(s); got != want {
			t.Errorf("AllowsSubscribe(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestSubjectWithin(t *testing.T) {
	tests := []struct {
		pattern, limit string
		want           bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.*", true},
		{"a.*", "a.*", true},
		{"a.*", "a.b", false},
		{"a.b.c", "a.>", true},
		{"a.*.c", "a.>", true},
		{"a.>", "a.>", true},
		{"a", "a.>", false}, // '>' needs at least one more token
		{"a.>", "a.*", false},
		{"a.>", "a.b.>", false},
		{"a.b.>", "a.*.>", true},
		{">", ">", true},
		{"anything.at.all", ">", true},
		{">", "a.>", false},
		{"b.c", "a.>", false},
		{"a.b.c", "a.*", false},
		{"a.b", "a.b.c", false},
		{"_INBOX_other_ns.x", "team.>", false},
	}
	for _, tt := range tests {
		if got := subjectWithin(tt.pattern, tt.limit); got != tt.want {
			t.Errorf("subjectWithin(%q, %q) = %v, want %v", tt.pattern, tt.limit, got, tt.want)
		}
		// Within means: whatever the pattern matches, the limit matches too.
		if tt.want {
			for _, subj := range []string{tt.pattern, strings.ReplaceAll(strings.ReplaceAll(tt.pattern, "*", "x"), ">", "y.z")} {
				if !strings.ContainsAny(subj, "*>") && subjectMatches(tt.pattern, subj) && !subjectMatches(tt.limit, subj) {
					t.Errorf("%q is within %q, but %q matches only the first", tt.pattern, tt.limit, subj)
				}
			}
		}
	}
}

// FuzzSubjectMatch checks the matchers ANNOTATION_SUBJECT_LIMIT, the template check and
// explain rely on against nats-server's own: subjectWithin against SubjectMatchesFilter (is
// every subject of the first matched by the second), subjectsOverlap against SubjectsCollide,
// and subjectMatches on a literal subject against SubjectMatchesFilter.
func FuzzSubjectMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"a.b", "a.*"}, {"a.>", "a.*"}, {"a.*.c", "a.>"}, {">", "a.>"}, {"a", "a.>"}, {"*.b.>", "a.*.c"},
		{"_INBOX_ns_sa.x", "_INBOX_ns_sa.>"}, {"a.b.c", "a.b"}, {"*", ">"}, {"a.*.*", "*.b.>"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if validSubject(a) != nil || validSubject(b) != nil {
			return
		}
		if !server.IsValidSubject(a) || !server.IsValidSubject(b) {
			t.Fatalf("validSubject accepts %q / %q, nats-server does not", a, b)
		}
		if got, want := subjectWithin(a, b), server.SubjectMatchesFilter(a, b); got != want {
			t.Fatalf("subjectWithin(%q, %q) = %v, nats-server says %v", a, b, got, want)
		}
		if got, want := subjectsOverlap(a, b), server.SubjectsCollide(a, b); got != want {
			t.Fatalf("subjectsOverlap(%q, %q) = %v, nats-server says %v", a, b, got, want)
		}
		if !strings.ContainsAny(a, "*>") {
			if got, want := subjectMatches(b, a), server.SubjectMatchesFilter(a, b); got != want {
				t.Fatalf("subjectMatches(%q, %q) = %v, nats-server says %v", b, a, got, want)
			}
		}
	})
}
