package kube

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats-server/v2/server"
)

func TestParsePolicy(t *testing.T) {
	defaultSub := []string{"team-a.>", "_INBOX_team-a_app.>"}
	tests := []struct {
		name        string
		defaults    PolicyDefaults
		sa          string
		annotations map[string]string
		want        Policy
	}{
		{
			name: "defaults only",
			want: Policy{Permissions: Permissions{PubAllow: []string{"team-a.>"}, SubAllow: defaultSub, AllowResponses: true}},
		},
		{
			name: "dots in the name become underscores in the inbox",
			sa:   "builder.v2",
			want: Policy{Permissions: Permissions{
				PubAllow: []string{"team-a.>"}, SubAllow: []string{"team-a.>", "_INBOX_team-a_builder_v2.>"}, AllowResponses: true,
			}},
		},
		{
			name: "allow annotations add, trimmed, empty entries ignored, deduplicated",
			annotations: map[string]string{
				AnnotationAllowedPub: " orders.created , ,metrics.*.cpu,orders.created,team-a.>,",
				AnnotationAllowedSub: "\tevents.>\n,*",
			},
			want: Policy{Permissions: Permissions{
				PubAllow:       []string{"team-a.>", "orders.created", "metrics.*.cpu"},
				SubAllow:       append(slices.Clone(defaultSub), "events.>", "*"),
				AllowResponses: true,
			}},
		},
		{
			name: "invalid allow entries are dropped with a warning",
			annotations: map[string]string{
				AnnotationAllowedPub: "a..b, ok.one, foo.>.bar, .lead, trail., foo*, fo>o",
				AnnotationAllowedSub: "has space, tab\there, ok.two, nul\x00byte",
			},
			want: Policy{
				Permissions: Permissions{
					PubAllow:       []string{"team-a.>", "ok.one"},
					SubAllow:       append(slices.Clone(defaultSub), "ok.two"),
					AllowResponses: true,
				},
				Warnings: []string{
					`nats.io/allowed-pub-subjects: dropped "a..b": empty token`,
					`nats.io/allowed-pub-subjects: dropped "foo.>.bar": '>' must be the last token`,
					`nats.io/allowed-pub-subjects: dropped ".lead": empty token`,
					`nats.io/allowed-pub-subjects: dropped "trail.": empty token`,
					`nats.io/allowed-pub-subjects: dropped "foo*": wildcard inside token "foo*"`,
					`nats.io/allowed-pub-subjects: dropped "fo>o": wildcard inside token "fo>o"`,
					`nats.io/allowed-sub-subjects: dropped "has space": whitespace or control character U+0020`,
					`nats.io/allowed-sub-subjects: dropped "tab\there": whitespace or control character U+0009`,
					`nats.io/allowed-sub-subjects: dropped "nul\x00byte": whitespace or control character U+0000`,
				},
			},
		},
		{
			name: "deny annotations go to the deny lists",
			annotations: map[string]string{
				AnnotationDeniedPub: "team-a.admin.>, team-a.admin.>",
				AnnotationDeniedSub: "team-a.secrets.*",
			},
			want: Policy{Permissions: Permissions{
				PubAllow: []string{"team-a.>"}, PubDeny: []string{"team-a.admin.>"},
				SubAllow: defaultSub, SubDeny: []string{"team-a.secrets.*"},
				AllowResponses: true,
			}},
		},
		{
			name:        "responses off",
			annotations: map[string]string{AnnotationAllowResponses: "false"},
			want:        Policy{Permissions: Permissions{PubAllow: []string{"team-a.>"}, SubAllow: defaultSub}},
		},
		{
			name:        "responses off, other spelling",
			annotations: map[string]string{AnnotationAllowResponses: " FALSE "},
			want:        Policy{Permissions: Permissions{PubAllow: []string{"team-a.>"}, SubAllow: defaultSub}},
		},
		{
			name:        "responses explicitly on",
			annotations: map[string]string{AnnotationAllowResponses: "true"},
			want:        Policy{Permissions: Permissions{PubAllow: []string{"team-a.>"}, SubAllow: defaultSub, AllowResponses: true}},
		},
		{
			name:        "unparsable allow-responses does not widen",
			annotations: map[string]string{AnnotationAllowResponses: "yes please"},
			want: Policy{
				Permissions: Permissions{PubAllow: []string{"team-a.>"}, SubAllow: defaultSub},
				Warnings:    []string{`nats.io/allow-responses: "yes please" is not a boolean, responses turned off`},
			},
		},
		{
			name:        "empty allow-responses does not widen",
			annotations: map[string]string{AnnotationAllowResponses: ""},
			want: Policy{
				Permissions: Permissions{PubAllow: []string{"team-a.>"}, SubAllow: defaultSub},
				Warnings:    []string{`nats.io/allow-responses: "" is not a boolean, responses turned off`},
			},
		},
		{
			name: "unknown nats.io annotations are reported, others ignored",
			annotations: map[string]string{
				"nats.io/allowed-pub-subject": "typo.>",
				"nats.io/zzz":                 "x",
				"kubectl.kubernetes.io/last-applied-configuration": "{}",
			},
			want: Policy{
				Permissions: Permissions{PubAllow: []string{"team-a.>"}, SubAllow: defaultSub, AllowResponses: true},
				Warnings: []string{
					`unknown annotation "nats.io/allowed-pub-subject" ignored`,
					`unknown annotation "nats.io/zzz" ignored`,
				},
			},
		},
		{
			name:     "custom defaults with every placeholder",
			defaults: PolicyDefaults{Pub: []string{"svc.{namespace}.{serviceaccount}.>"}, Sub: []string{"{inbox}.>", "broadcast"}},
			sa:       "web.frontend",
			want: Policy{Permissions: Permissions{
				PubAllow:       []string{"svc.team-a.web_frontend.>"},
				SubAllow:       []string{"_INBOX_team-a_web_frontend.>", "broadcast"},
				AllowResponses: true,
			}},
		},
		{
			name:     "no publish defaults and nothing allowed: deny everything explicitly",
			defaults: PolicyDefaults{Pub: []string{}, Sub: []string{"{inbox}.>"}},
			annotations: map[string]string{
				AnnotationAllowedPub: "bad..subject",
			},
			want: Policy{
				Permissions: Permissions{
					PubDeny:        []string{">"},
					SubAllow:       []string{"_INBOX_team-a_app.>"},
					AllowResponses: true,
				},
				Warnings: []string{`nats.io/allowed-pub-subjects: dropped "bad..subject": empty token`},
			},
		},
		{
			name:        "no defaults at all, annotations only",
			defaults:    PolicyDefaults{Pub: []string{}, Sub: []string{}},
			annotations: map[string]string{AnnotationAllowedSub: "feed.>"},
			want: Policy{Permissions: Permissions{
				PubDeny: []string{">"}, SubAllow: []string{"feed.>"}, AllowResponses: true,
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sa := tt.sa
			if sa == "" {
				sa = "app"
			}
			annotations := maps.Clone(tt.annotations)
			got, err := ParsePolicy(tt.defaults, "team-a", sa, annotations)
			if err != nil {
				t.Fatalf("ParsePolicy: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParsePolicy =\n%#v\nwant\n%#v", got, tt.want)
			}
			if !maps.Equal(annotations, tt.annotations) {
				t.Errorf("ParsePolicy modified the annotations: %v", annotations)
			}
		})
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct {
		name        string
		defaults    PolicyDefaults
		namespace   string
		sa          string
		annotations map[string]string
		wantErr     string
	}{
		{name: "invalid deny pub entry", annotations: map[string]string{AnnotationDeniedPub: "team-a.admin.>, team-a..x"}, wantErr: `nats.io/denied-pub-subjects: "team-a..x": empty token`},
		{name: "invalid deny sub entry", annotations: map[string]string{AnnotationDeniedSub: "secrets.> more"}, wantErr: `nats.io/denied-sub-subjects: "secrets.> more"`},
		{name: "deny with inner wildcard", annotations: map[string]string{AnnotationDeniedSub: "secrets*"}, wantErr: "wildcard inside token"},
		{name: "deny too long", annotations: map[string]string{AnnotationDeniedPub: strings.Repeat("a", maxSubjectBytes+1)}, wantErr: "longer than"},
		{name: "deny not UTF-8", annotations: map[string]string{AnnotationDeniedPub: "a.\xff"}, wantErr: "not valid UTF-8"},
		{name: "invalid namespace", namespace: "Team_A", wantErr: "namespace"},
		{name: "empty name", sa: "-", wantErr: "serviceaccount name"},
		{name: "bad template", defaults: PolicyDefaults{Pub: []string{"{pod}.>"}}, wantErr: "unknown placeholder {pod}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, sa := tt.namespace, tt.sa
			if ns == "" {
				ns = "team-a"
			}
			if sa == "" {
				sa = "app"
			}
			got, err := ParsePolicy(tt.defaults, ns, sa, tt.annotations)
			if !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParsePolicy error = %v, want %v containing %q", err, ErrInvalidPolicy, tt.wantErr)
			}
			if !reflect.DeepEqual(got, Policy{}) {
				t.Errorf("ParsePolicy returned %+v with an error", got)
			}
		})
	}
}

func TestPolicyDefaultsValidate(t *testing.T) {
	tests := []struct {
		name    string
		d       PolicyDefaults
		wantErr string
	}{
		{"zero value", PolicyDefaults{}, ""},
		{"built-in", DefaultPolicyDefaults(), ""},
		{"literal and wildcards", PolicyDefaults{Pub: []string{"a.*.c", "{namespace}.{serviceaccount}.>"}, Sub: []string{">"}}, ""},
		{"unknown placeholder", PolicyDefaults{Sub: []string{"{ns}.>"}}, "unknown placeholder {ns}"},
		{"unterminated", PolicyDefaults{Pub: []string{"{namespace.>"}}, "unterminated"},
		{"unbalanced", PolicyDefaults{Pub: []string{"namespace}.>"}}, "unbalanced"},
		{"renders invalid", PolicyDefaults{Pub: []string{"{namespace}..x"}}, "empty token"},
		{"wildcard glued to placeholder", PolicyDefaults{Pub: []string{"{namespace}*"}}, "wildcard inside token"},
		{"empty entry", PolicyDefaults{Sub: []string{""}}, "empty subject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.d.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidSubject(t *testing.T) {
	valid := []string{"a", "a.b.c", "*", ">", "a.*", "a.>", "*.*.>", "_INBOX_ns_sa.>", "$JS.API.>", "ünïcode.ok", "a-b_c~d"}
	invalid := []string{"", ".", "a.", ".a", "a..b", "a.>.b", ">.a", "a b", "a\tb", "a\nb", "a*", "*a", "a>", "a.b*.c",
		"a\x00b", "a\x7fb", "\xff", "a\u00a0b", "a\u2003b", strings.Repeat("x", maxSubjectBytes+1)}
	invalid = append(invalid, invisibleSubjects...)
	for _, s := range valid {
		if err := validSubject(s); err != nil {
			t.Errorf("validSubject(%q) = %v, want nil", s, err)
		}
		if !server.IsValidSubject(s) {
			t.Errorf("nats-server rejects %q that validSubject accepts", s)
		}
	}
	for _, s := range invalid {
		if err := validSubject(s); err == nil {
			t.Errorf("validSubject(%q) = nil, want an error", s)
		}
	}
}

// invisibleSubjects read like plain subjects but carry a character that does not show.
var invisibleSubjects = []string{
	"team-a.secret\u200d.>",   // zero-width joiner
	"team-a.se\u200bcret",     // zero-width space
	"team-a.\u200csecret",     // zero-width non-joiner
	"team-a.secret\u00ad",     // soft hyphen
	"team-a.\u202esecret",     // right-to-left override
	"team-a.\u2066secret",     // left-to-right isolate
	"\ufeffteam-a.secret",     // byte order mark
	"team-a.secret\u2060",     // word joiner
	"team-a.secret\U000e0041", // tag character
	"team-a.secret\ufe0f",     // variation selector
	"team-a.se\u034fcret",     // combining grapheme joiner
	"team-a.\u3164",           // Hangul filler
	"team-a.\u180esecret",     // Mongolian vowel separator
	"team-a.sec\u0085ret",     // next line (at either end it would be trimmed as space)
	"team-a.sec\u2028ret",     // line separator
	"team-a.\ue000",           // private use
	"team-a.\U0010fffd",       // private use, plane 16
	"team-a.\u0378",           // unassigned
	"team-a.\ufffe",           // noncharacter
}

// TestInvisibleCharacters checks that a subject with a character that does not show is dropped
// from an allow annotation with a warning, refuses the login in a deny annotation, and stops a
// template or limit from validating.
func TestInvisibleCharacters(t *testing.T) {
	for _, subj := range invisibleSubjects {
		err := validSubject(subj)
		if err == nil {
			t.Errorf("validSubject(%q) = nil, want an error", subj)
			continue
		}
		p, perr := ParsePolicy(PolicyDefaults{}, "team-a", "app", map[string]string{AnnotationAllowedPub: "ok.one," + subj})
		if perr != nil || !slices.Equal(p.Permissions.PubAllow, []string{"team-a.>", "ok.one"}) || len(p.Warnings) != 1 ||
			!strings.Contains(p.Warnings[0], "dropped") || !strings.Contains(p.Warnings[0], err.Error()) {
			t.Errorf("allow %q: %+v, %v; want it dropped with a warning", subj, p, perr)
		}
		if len(p.Warnings) == 1 && !utf8.ValidString(p.Warnings[0]) {
			t.Errorf("warning %q is not valid UTF-8", p.Warnings[0])
		}
		for _, key := range []string{AnnotationDeniedPub, AnnotationDeniedSub} {
			if _, derr := ParsePolicy(PolicyDefaults{}, "team-a", "app", map[string]string{key: "team-a.admin.>," + subj}); !errors.Is(derr, ErrInvalidPolicy) {
				t.Errorf("deny %q in %s: error %v, want %v", subj, key, derr, ErrInvalidPolicy)
			}
		}
		for _, d := range []PolicyDefaults{
			{Pub: []string{"{namespace}." + subj}},
			{Sub: []string{subj}},
			{AnnotationLimit: []string{"{namespace}.>", subj}},
		} {
			if verr := d.Validate(); verr == nil || !strings.Contains(verr.Error(), err.Error()) {
				t.Errorf("template %q: Validate = %v, want %q", subj, verr, err)
			}
		}
	}
	// The warning shows the character escaped, so that the log reader sees it.
	p, err := ParsePolicy(PolicyDefaults{}, "team-a", "app", map[string]string{AnnotationAllowedPub: "team-a.secret\u200d.>"})
	if err != nil || len(p.Warnings) != 1 {
		t.Fatalf("ParsePolicy: %+v, %v", p, err)
	}
	if want := `nats.io/allowed-pub-subjects: dropped "team-a.secret\u200d.>": invisible character U+200D`; p.Warnings[0] != want {
		t.Errorf("warning %q, want %q", p.Warnings[0], want)
	}
	// Letters, marks and symbols beyond ASCII that show stay valid.
	for _, subj := range []string{"ünïcode.ok", "日本.語", "e\u0301t\u0301e\u0301", "emoji.\U0001f680", "greek.αβγ"} {
		if err := validSubject(subj); err != nil {
			t.Errorf("validSubject(%q) = %v, want nil", subj, err)
		}
	}
}

func TestInboxPrefix(t *testing.T) {
	tests := []struct{ ns, name, want string }{
		{"team-a", "app", "_INBOX_team-a_app"},
		{"team-a", "app.v2.canary", "_INBOX_team-a_app_v2_canary"},
		{"a", "b-c", "_INBOX_a_b-c"},
	}
	for _, tt := range tests {
		if got := InboxPrefix(tt.ns, tt.name); got != tt.want {
			t.Errorf("InboxPrefix(%q, %q) = %q, want %q", tt.ns, tt.name, got, tt.want)
		}
	}
	// Namespaces carry no '_' or '.', so distinct ServiceAccounts never share an inbox, and
	// nobody's default inbox is below another's.
	ids := [][2]string{{"a", "b-c"}, {"a-b", "c"}, {"a", "b.c"}, {"a", "b"}, {"ab", "c"}}
	for i, x := range ids {
		for j, y := range ids {
			px, py := InboxPrefix(x[0], x[1]), InboxPrefix(y[0], y[1])
			if i != j && (px == py || server.SubjectMatchesFilter(px+".x", py+".>")) {
				t.Errorf("inbox of %v (%s) overlaps that of %v (%s)", x, px, y, py)
			}
		}
	}
}

func TestParsePolicyAnnotationLimit(t *testing.T) {
	d := DefaultPolicyDefaults()
	d.AnnotationLimit = []string{"{namespace}.>", "shared.*.events"}
	p, err := ParsePolicy(d, "team-a", "app", map[string]string{
		AnnotationAllowedPub: "team-a.orders.>, shared.eu.events, shared.>, team-b.orders, >, _INBOX_team-b_app.x",
		AnnotationAllowedSub: "team-a.*, _INBOX.>, shared.*.events",
		AnnotationDeniedPub:  "other.>", // deny entries only narrow: never limited
	})
	if err != nil {
		t.Fatal(err)
	}
	perms := p.Permissions
	// The defaults stay (the inbox default is the operator's, not an annotation).
	if want := []string{"team-a.>", "team-a.orders.>", "shared.eu.events"}; !slices.Equal(perms.PubAllow, want) {
		t.Errorf("PubAllow = %q, want %q", perms.PubAllow, want)
	}
	if want := []string{"team-a.>", "_INBOX_team-a_app.>", "team-a.*", "shared.*.events"}; !slices.Equal(perms.SubAllow, want) {
		t.Errorf("SubAllow = %q, want %q", perms.SubAllow, want)
	}
	if want := []string{"other.>"}; !slices.Equal(perms.PubDeny, want) {
		t.Errorf("PubDeny = %q, want %q", perms.PubDeny, want)
	}
	dropped := 0
	for _, w := range p.Warnings {
		if strings.Contains(w, "outside the annotation subject limit team-a.>,shared.*.events") {
			dropped++
		}
	}
	if dropped != 5 { // shared.>, team-b.orders, >, _INBOX_team-b_app.x, _INBOX.>
		t.Errorf("%d entries reported as outside the limit, want 5: %q", dropped, p.Warnings)
	}

	// Without a limit the same annotations grant everything they name.
	p, err = ParsePolicy(DefaultPolicyDefaults(), "team-a", "app", map[string]string{AnnotationAllowedPub: ">"})
	if err != nil || !slices.Contains(p.Permissions.PubAllow, ">") {
		t.Errorf("no limit: PubAllow = %q (%v), want \">\" granted", p.Permissions.PubAllow, err)
	}

	// A limit that does not render fails validation.
	bad := DefaultPolicyDefaults()
	bad.AnnotationLimit = []string{"{nope}.>"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "annotation limit") {
		t.Errorf("Validate = %v, want an annotation limit error", err)
	}
}

// FuzzParsePolicy checks the parser's safety properties on arbitrary annotation values: it
// never panics; every subject it returns is valid for nats-server; an invalid deny entry
// always fails the policy and no deny entry is ever dropped; allow lists hold nothing but the
// defaults and annotation entries.
func FuzzParsePolicy(f *testing.F) {
	f.Add("orders.>, metrics.*", "events.>", "admin.>", "secrets.*", "false", "app")
	f.Add("a..b,,", " > ", "x.>.y", "", "maybe", "builder.v2")
	f.Add("\x00", "*,>", "a b", "ok", "TRUE", "-bad-")
	f.Add("foo*", "\u00a0", "", "", "", "a")
	f.Add("a\u200d.b, c", "d\u202e", "team-a.secret\u200d.>", "x,y,z,w", "true", "app")
	f.Fuzz(func(t *testing.T, pubAllow, subAllow, pubDeny, subDeny, responses, name string) {
		annotations := map[string]string{
			AnnotationAllowedPub:     pubAllow,
			AnnotationAllowedSub:     subAllow,
			AnnotationDeniedPub:      pubDeny,
			AnnotationDeniedSub:      subDeny,
			AnnotationAllowResponses: responses,
		}
		d := DefaultPolicyDefaults()
		p, err := ParsePolicy(d, "team-a", name, annotations)
		// With a limit, nothing an annotation grants reaches outside it.
		limited := d
		limited.AnnotationLimit = []string{"team-a.>", "shared.*"}
		if lp, lerr := ParsePolicy(limited, "team-a", name, annotations); lerr == nil {
			for _, list := range [][]string{lp.Permissions.PubAllow, lp.Permissions.SubAllow} {
				for _, s := range list {
					inbox := strings.HasPrefix(s, InboxPrefix("team-a", name)+".")
					if !inbox && !subjectWithin(s, "team-a.>") && !subjectWithin(s, "shared.*") {
						t.Fatalf("limited policy grants %q: %+v", s, lp.Permissions)
					}
				}
			}
		} else if (err == nil) != (lerr == nil) {
			t.Fatalf("the limit changed whether the policy parses: %v vs %v", err, lerr)
		}

		denyInvalid := false
		for _, v := range []string{pubDeny, subDeny} {
			for e := range strings.SplitSeq(v, ",") {
				if e = strings.TrimSpace(e); e != "" && !server.IsValidSubject(e) {
					denyInvalid = true
				}
			}
		}
		if denyInvalid && err == nil {
			t.Fatalf("invalid deny entry in %q / %q accepted: %+v", pubDeny, subDeny, p)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v does not wrap ErrInvalidPolicy", err)
			}
			return
		}

		perms := p.Permissions
		for _, list := range [][]string{perms.PubAllow, perms.PubDeny, perms.SubAllow, perms.SubDeny} {
			for _, s := range list {
				if !server.IsValidSubject(s) || validSubject(s) != nil {
					t.Fatalf("invalid subject %q in %+v", s, perms)
				}
				for _, r := range s {
					if unicode.IsSpace(r) || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co) {
						t.Fatalf("subject %q holds %U, which does not show", s, r)
					}
				}
			}
		}
		// With a cap of 3 entries: allow lists hold at most 3 more than the defaults, and a
		// deny annotation of more than 3 entries refuses.
		capped := d
		capped.MaxEntries = 3
		cp, cerr := ParsePolicy(capped, "team-a", name, annotations)
		countEntries := func(v string) int {
			n := 0
			for range entries(v) {
				n++
			}
			return n
		}
		if (countEntries(pubDeny) > 3 || countEntries(subDeny) > 3) != (cerr != nil) {
			t.Fatalf("cap 3 with deny annotations %q / %q: error %v", pubDeny, subDeny, cerr)
		}
		if cerr == nil && (len(cp.Permissions.PubAllow) > 1+3 || len(cp.Permissions.SubAllow) > 2+3) {
			t.Fatalf("cap 3: %+v", cp.Permissions)
		}
		for _, c := range []struct {
			allow     []string
			templates []string
			annotated string
		}{{perms.PubAllow, d.Pub, pubAllow}, {perms.SubAllow, d.Sub, subAllow}} {
			origin := map[string]bool{}
			for _, tmpl := range c.templates {
				s, err := render(tmpl, "team-a", name)
				if err != nil {
					t.Fatalf("default %q does not render: %v", tmpl, err)
				}
				origin[s] = true
			}
			for e := range strings.SplitSeq(c.annotated, ",") {
				origin[strings.TrimSpace(e)] = true
			}
			for _, s := range c.allow {
				if !origin[s] {
					t.Fatalf("allow entry %q comes from neither defaults nor annotations", s)
				}
			}
			if len(c.allow) == 0 {
				t.Fatalf("empty allow list despite defaults: %+v", perms)
			}
		}
		for _, c := range []struct {
			deny      []string
			annotated string
		}{{perms.PubDeny, pubDeny}, {perms.SubDeny, subDeny}} {
			for e := range strings.SplitSeq(c.annotated, ",") {
				if e = strings.TrimSpace(e); e != "" && !slices.Contains(c.deny, e) {
					t.Fatalf("deny entry %q dropped: %+v", e, perms)
				}
			}
		}
		if perms.AllowResponses {
			if v := strings.TrimSpace(responses); !slices.Contains([]string{"1", "t", "T", "TRUE", "true", "True"}, v) {
				t.Fatalf("responses allowed with allow-responses %q", responses)
			}
		}
	})
}

func BenchmarkParsePolicy(b *testing.B) {
	annotations := map[string]string{
		AnnotationAllowedPub:                               "orders.created, orders.updated, metrics.*.cpu, team-b.requests.>",
		AnnotationAllowedSub:                               "events.>, team-b.replies.*",
		AnnotationDeniedPub:                                "team-a.admin.>",
		AnnotationAllowResponses:                           "true",
		"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 512),
	}
	d := DefaultPolicyDefaults()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParsePolicy(d, "team-a", "app", annotations); err != nil {
			b.Fatal(err)
		}
	}
}

func TestParsePolicyLargeAnnotations(t *testing.T) {
	var allow, bad []string
	for i := range 2000 {
		allow = append(allow, fmt.Sprintf("svc.%d.>", i%500)) // every entry four times
	}
	for i := range 25 {
		bad = append(bad, fmt.Sprintf("bad..%d", i))
	}
	p, err := ParsePolicy(PolicyDefaults{MaxEntries: 2000}, "team-a", "app", map[string]string{
		AnnotationAllowedPub: strings.Join(allow, ","),
		AnnotationAllowedSub: strings.Join(bad, ","),
	})
	if err != nil {
		t.Fatalf("ParsePolicy: %v", err)
	}
	if got, want := len(p.Permissions.PubAllow), 1+500; got != want {
		t.Errorf("len(PubAllow) = %d, want %d (deduplicated)", got, want)
	}
	if got, want := len(p.Warnings), maxWarnings+1; got != want {
		t.Fatalf("len(Warnings) = %d, want %d", got, want)
	}
	if got, want := p.Warnings[maxWarnings], "15 more warnings"; got != want {
		t.Errorf("last warning = %q, want %q", got, want)
	}
}

// entryList is n distinct valid subjects, comma-separated.
func entryList(prefix string, n int) string {
	e := make([]string, n)
	for i := range e {
		e[i] = fmt.Sprintf("%s.%d", prefix, i)
	}
	return strings.Join(e, ",")
}

func TestParsePolicyMaxEntries(t *testing.T) {
	// The default: an allow list longer than DefaultAnnotationMaxEntries is cut, with a warning.
	// (The byte cap is raised out of the way: 2,000 entries of 14 bytes are beyond its default.)
	p, err := ParsePolicy(PolicyDefaults{MaxBytes: MaxAnnotationMaxBytes}, "team-a", "app", map[string]string{
		AnnotationAllowedPub: entryList("team-a.pub", DefaultAnnotationMaxEntries+500),
		AnnotationAllowedSub: entryList("team-a.sub", DefaultAnnotationMaxEntries),
	})
	if err != nil {
		t.Fatalf("ParsePolicy: %v", err)
	}
	if got, want := len(p.Permissions.PubAllow), 1+DefaultAnnotationMaxEntries; got != want {
		t.Errorf("len(PubAllow) = %d, want %d (default and the first %d entries)", got, want, DefaultAnnotationMaxEntries)
	}
	if got, want := p.Permissions.PubAllow[len(p.Permissions.PubAllow)-1], fmt.Sprintf("team-a.pub.%d", DefaultAnnotationMaxEntries-1); got != want {
		t.Errorf("last publish entry kept = %q, want %q", got, want)
	}
	if got, want := len(p.Permissions.SubAllow), 2+DefaultAnnotationMaxEntries; got != want {
		t.Errorf("len(SubAllow) = %d, want %d (a list of exactly the cap is whole)", got, want)
	}
	want := []string{fmt.Sprintf("nats.io/allowed-pub-subjects: more than %d entries, only the first %d are used", DefaultAnnotationMaxEntries, DefaultAnnotationMaxEntries)}
	if !slices.Equal(p.Warnings, want) {
		t.Errorf("Warnings = %q, want %q", p.Warnings, want)
	}

	// Empty entries do not count; invalid ones do.
	d := PolicyDefaults{MaxEntries: 3}
	p, err = ParsePolicy(d, "team-a", "app", map[string]string{AnnotationAllowedPub: "a,,b..c, ,d,e"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"team-a.>", "a", "d"}; !slices.Equal(p.Permissions.PubAllow, want) {
		t.Errorf("PubAllow = %q, want %q", p.Permissions.PubAllow, want)
	}
	if len(p.Warnings) != 2 || !strings.Contains(p.Warnings[1], "more than 3 entries, only the first 3 are used") {
		t.Errorf("Warnings = %q, want the dropped invalid entry and the cut", p.Warnings)
	}

	// A deny list over the cap refuses: cutting it would widen access.
	for _, key := range []string{AnnotationDeniedPub, AnnotationDeniedSub} {
		_, err = ParsePolicy(PolicyDefaults{}, "team-a", "app", map[string]string{key: entryList("team-a.deny", DefaultAnnotationMaxEntries+1)})
		if !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), key+": more than 1000 entries") {
			t.Errorf("%s over the cap: error %v, want %v naming the annotation and the cap", key, err, ErrInvalidPolicy)
		}
		p, err = ParsePolicy(PolicyDefaults{}, "team-a", "app", map[string]string{key: entryList("team-a.deny", DefaultAnnotationMaxEntries)})
		if err != nil {
			t.Errorf("%s at the cap: %v", key, err)
		}
	}
	if got := len(p.Permissions.SubDeny); got != DefaultAnnotationMaxEntries {
		t.Errorf("len(SubDeny) = %d, want %d", got, DefaultAnnotationMaxEntries)
	}
}

func TestParsePolicyMaxBytes(t *testing.T) {
	// Subjects of exactly 16 bytes: "team-a.x.%07d".
	list := func(kind string, n int) string {
		e := make([]string, n)
		for i := range e {
			e[i] = fmt.Sprintf("team-a.%s.%07d", kind, i)
		}
		return strings.Join(e, ",")
	}
	const size = 16
	d := PolicyDefaults{MaxBytes: 1024} // 64 subjects of 16 bytes

	// Deny lists count first and whole; allow lists share what is left, publish first, then
	// subscribe; duplicates and dropped entries do not count; defaults do not count.
	p, err := ParsePolicy(d, "team-a", "app", map[string]string{
		AnnotationDeniedPub:  list("p", 10),
		AnnotationDeniedSub:  list("s", 10) + "," + list("s", 10), // each twice
		AnnotationAllowedPub: "a..b," + list("q", 30) + "," + list("q", 30),
		AnnotationAllowedSub: list("r", 50),
	})
	if err != nil {
		t.Fatalf("ParsePolicy: %v", err)
	}
	if got, want := len(p.Permissions.PubDeny)+len(p.Permissions.SubDeny), 20; got != want {
		t.Errorf("deny entries = %d, want %d", got, want)
	}
	if got, want := len(p.Permissions.PubAllow), 1+30; got != want {
		t.Errorf("len(PubAllow) = %d, want %d (the default and 30 entries)", got, want)
	}
	if got, want := len(p.Permissions.SubAllow), 2+64-20-30; got != want {
		t.Errorf("len(SubAllow) = %d, want %d (the defaults and what the budget had left)", got, want)
	}
	granted := 0
	for _, l := range [][]string{p.Permissions.PubDeny, p.Permissions.SubDeny, p.Permissions.PubAllow[1:], p.Permissions.SubAllow[2:]} {
		for _, s := range l {
			granted += len(s)
		}
	}
	if granted > d.MaxBytes || granted != 64*size {
		t.Errorf("granted %d bytes of subjects, want %d (the cap)", granted, d.MaxBytes)
	}
	want := `nats.io/allowed-sub-subjects: annotations grant more than 1024 bytes of subjects, entries from "team-a.r.0000014" on are not used`
	if len(p.Warnings) != 2 || p.Warnings[1] != want {
		t.Errorf("Warnings = %q, want the invalid entry and %q", p.Warnings, want)
	}

	// Deny lists beyond the cap together refuse the login: dropping any would widen access.
	_, err = ParsePolicy(d, "team-a", "app", map[string]string{
		AnnotationDeniedPub: list("p", 40),
		AnnotationDeniedSub: list("s", 25),
	})
	if !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), "nats.io/denied-sub-subjects: deny annotations list more than 1024 bytes of subjects") {
		t.Errorf("deny lists over the cap: error %v, want %v naming the annotation and the cap", err, ErrInvalidPolicy)
	}
	// At the cap exactly: allowed, and no allow entry fits any more.
	p, err = ParsePolicy(d, "team-a", "app", map[string]string{
		AnnotationDeniedPub:  list("p", 40),
		AnnotationDeniedSub:  list("s", 24),
		AnnotationAllowedPub: list("q", 1),
	})
	if err != nil {
		t.Fatalf("deny lists at the cap: %v", err)
	}
	if got := p.Permissions.PubAllow; len(got) != 1 || len(p.Warnings) != 1 {
		t.Errorf("PubAllow = %q, Warnings = %q, want the default only and one warning", got, p.Warnings)
	}

	// The default cap, with all four lists at the entry cap and long subjects (the worst case
	// before the byte cap): the deny lists alone are beyond it.
	long := func(kind string) string {
		e := make([]string, DefaultAnnotationMaxEntries)
		for i := range e {
			e[i] = fmt.Sprintf("shop.%s.%s.%05d", kind, strings.Repeat("x", 40), i)
		}
		return strings.Join(e, ",")
	}
	_, err = ParsePolicy(PolicyDefaults{}, "team-a", "app", map[string]string{
		AnnotationAllowedPub: long("pub"), AnnotationAllowedSub: long("sub"),
		AnnotationDeniedPub: long("nopub"), AnnotationDeniedSub: long("nosub"),
	})
	if !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), "more than 16384 bytes") {
		t.Errorf("four full lists: error %v, want %v naming the default cap", err, ErrInvalidPolicy)
	}
	p, err = ParsePolicy(PolicyDefaults{}, "team-a", "app", map[string]string{
		AnnotationAllowedPub: long("pub"), AnnotationAllowedSub: long("sub"),
	})
	if err != nil {
		t.Fatal(err)
	}
	granted = 0
	for _, s := range append(p.Permissions.PubAllow[1:], p.Permissions.SubAllow[2:]...) {
		granted += len(s)
	}
	if granted > DefaultAnnotationMaxBytes || granted < DefaultAnnotationMaxBytes-maxSubjectBytes {
		t.Errorf("two full allow lists granted %d bytes, want just under %d", granted, DefaultAnnotationMaxBytes)
	}
}

func TestPolicyDefaultsMaxBytes(t *testing.T) {
	for _, n := range []int{-1, 1, MinAnnotationMaxBytes - 1, MaxAnnotationMaxBytes + 1} {
		if err := (PolicyDefaults{MaxBytes: n}).Validate(); err == nil || !strings.Contains(err.Error(), "annotation subject bytes") {
			t.Errorf("MaxBytes %d: Validate = %v, want an error", n, err)
		}
	}
	for _, n := range []int{0, MinAnnotationMaxBytes, MaxAnnotationMaxBytes} {
		if err := (PolicyDefaults{MaxBytes: n}).Validate(); err != nil {
			t.Errorf("MaxBytes %d: Validate = %v", n, err)
		}
	}
}

func TestPolicyDefaultsMaxEntries(t *testing.T) {
	for _, n := range []int{-1, MaxAnnotationMaxEntries + 1} {
		if err := (PolicyDefaults{MaxEntries: n}).Validate(); err == nil || !strings.Contains(err.Error(), "entries per annotation") {
			t.Errorf("MaxEntries %d: Validate = %v, want an error", n, err)
		}
	}
	for _, n := range []int{0, 1, MaxAnnotationMaxEntries} {
		if err := (PolicyDefaults{MaxEntries: n}).Validate(); err != nil {
			t.Errorf("MaxEntries %d: Validate = %v", n, err)
		}
	}
}

// hugeAnnotations are a ServiceAccount's annotations at Kubernetes' size limit (256 KiB in
// all): an allow and a deny list of distinct subjects, as short as they come, so as many as fit.
func hugeAnnotations(maxEntries int) map[string]string {
	const total = 256 << 10
	var allow strings.Builder
	for i := 0; allow.Len() < total-16<<10; i++ {
		fmt.Fprintf(&allow, "a.%d,", i)
	}
	return map[string]string{
		AnnotationAllowedPub: allow.String(),
		AnnotationAllowedSub: "a.>",
		AnnotationDeniedPub:  entryList("a.d", maxEntries),
	}
}

func BenchmarkParsePolicyHuge(b *testing.B) {
	annotations := hugeAnnotations(DefaultAnnotationMaxEntries)
	d := DefaultPolicyDefaults()
	d.AnnotationLimit = []string{"{namespace}.>", "a.>", "shared.*.events"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParsePolicy(d, "team-a", "app", annotations); err != nil {
			b.Fatal(err)
		}
	}
}
