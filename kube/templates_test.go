package kube

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// templateCase is a set of templates and the collision it must be refused for ("" none).
type templateCase struct {
	name string
	d    PolicyDefaults
	want string
}

var templateCases = []templateCase{
	{"built-in defaults", PolicyDefaults{}, ""},
	{"built-in defaults and a namespace limit", PolicyDefaults{AnnotationLimit: []string{"{namespace}.>", "shared.*"}}, ""},
	{"every placeholder in a token of its own", PolicyDefaults{Pub: []string{"svc.{namespace}.{serviceaccount}.>"}, Sub: []string{"{inbox}.>", "broadcast"}}, ""},
	{"namespace and serviceaccount joined by '_'", PolicyDefaults{Pub: []string{"{namespace}_{serviceaccount}.>"}, Sub: []string{}}, ""},
	{"serviceaccount and namespace joined by '_'", PolicyDefaults{Pub: []string{"{serviceaccount}_{namespace}.>"}, Sub: []string{}}, ""},
	{"a namespace's space holds its serviceaccounts'", PolicyDefaults{Pub: []string{"{namespace}.>", "{namespace}.{serviceaccount}.>", "{namespace}.x.>"}, Sub: []string{}}, ""},
	{"an inbox written out", PolicyDefaults{Pub: []string{"_INBOX_{namespace}_{serviceaccount}.>"}, Sub: []string{"{inbox}.>"}}, ""},
	{"wildcards after the namespace", PolicyDefaults{Pub: []string{"{namespace}.*"}, Sub: []string{"{namespace}.>"}}, ""},
	{"a literal names cannot have", PolicyDefaults{Pub: []string{"{namespace}.>", "{namespace}_shared.>", "SVC-{namespace}.>"}, Sub: []string{}}, ""},

	{"namespace-serviceaccount", PolicyDefaults{Pub: []string{"{namespace}-{serviceaccount}.>"}},
		`default publish subject "{namespace}-{serviceaccount}.>" renders "a-c-e.>" both for serviceaccount a/c-e and for serviceaccount a-c/e`},
	{"adjacent placeholders", PolicyDefaults{Sub: []string{"{namespace}{serviceaccount}.>"}, Pub: []string{}},
		`default subscribe subject "{namespace}{serviceaccount}.>" renders "abc.>" both for serviceaccount a/bc and for serviceaccount ab/c`},
	{"a letter between placeholders", PolicyDefaults{Pub: []string{"{namespace}x{serviceaccount}"}, Sub: []string{}},
		`renders`},
	{"limit reaching another namespace's defaults", PolicyDefaults{AnnotationLimit: []string{"{namespace}-shared.>"}},
		`default publish subject "{namespace}.>" for namespace a-shared ("a-shared.>") overlaps annotation limit subject "{namespace}-shared.>" for namespace a ("a-shared.>")`},
	{"a prefix a namespace can have", PolicyDefaults{Pub: []string{"ns-{namespace}.>"}, Sub: []string{"{namespace}.>"}},
		`overlaps`},
	{"a literal token where another template has the namespace", PolicyDefaults{Pub: []string{"{namespace}.>", "svc.{namespace}.{serviceaccount}.>"}, Sub: []string{}},
		`default publish subject "{namespace}.>" for namespace svc ("svc.>") overlaps default publish subject "svc.{namespace}.{serviceaccount}.>"`},
	{"a wildcard where another template has the namespace", PolicyDefaults{AnnotationLimit: []string{"*.{namespace}.>"}},
		`overlaps annotation limit subject "*.{namespace}.>"`},
	{"a serviceaccount without its namespace", PolicyDefaults{Sub: []string{"apps.{serviceaccount}.>"}, Pub: []string{}},
		`renders "apps.a.>" both for serviceaccount x/a and for serviceaccount y/a`},
	{"a namespace's space reaching a serviceaccount's", PolicyDefaults{Pub: []string{"{namespace}.>"}, Sub: []string{"{serviceaccount}.>"}},
		`overlaps default subscribe subject "{serviceaccount}.>"`},
	{"two serviceaccounts of one namespace", PolicyDefaults{Pub: []string{"{namespace}.{serviceaccount}-x.>"}, Sub: []string{"{namespace}.{serviceaccount}.>"}},
		`default publish subject "{namespace}.{serviceaccount}-x.>" for serviceaccount a/a ("a.a-x.>") overlaps default subscribe subject "{namespace}.{serviceaccount}.>" for serviceaccount a/a-x ("a.a-x.>")`},
	{"a dotted serviceaccount name", PolicyDefaults{Pub: []string{"{namespace}.{serviceaccount}_x.>", "{namespace}.{serviceaccount}.>"}, Sub: []string{}},
		`for serviceaccount a/a.x`},
}

func TestTemplateCollisions(t *testing.T) {
	for _, tc := range templateCases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.d.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ce *CollisionError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want a collision saying %q", err, tc.want)
			}
			if ce.SubjectA == "" {
				t.Fatalf("no pair shown: %v", err)
			}
			// The pair is real: valid names, differing identities, overlapping subjects.
			if !validIdentity(Identity{Namespace: ce.A.Namespace, Name: orApp(ce.A.Name)}) || !validIdentity(Identity{Namespace: ce.B.Namespace, Name: orApp(ce.B.Name)}) {
				t.Errorf("invalid names in %+v / %+v", ce.A, ce.B)
			}
			if ce.A == ce.B || !server.SubjectsCollide(ce.SubjectA, ce.SubjectB) {
				t.Errorf("%q for %+v and %q for %+v do not collide", ce.SubjectA, ce.A, ce.SubjectB, ce.B)
			}
		})
	}
}

func orApp(name string) string {
	if name == "" {
		return "app"
	}
	return name
}

// identities are small namespaces and ServiceAccount names that make every collision of
// templates built from "a", "b", "-", "x" and '_' show.
func smallIdentities() []Identity {
	nss := []string{"a", "b", "x", "aa", "ab", "ax", "a-a", "a-b", "a-x", "b-a", "ba", "x-a", "a-a-a", "aa-a", "a-aa"}
	sas := []string{"a", "b", "x", "aa", "a-a", "a-b", "a.a", "a.b", "a.x", "b.a", "a-a.a", "a.a-a"}
	var ids []Identity
	for _, ns := range nss {
		for _, sa := range sas {
			ids = append(ids, Identity{Namespace: ns, Name: sa})
		}
	}
	return ids
}

// bruteCollision looks for two identities whose renderings of t1 and t2 overlap while the
// identities differ as checkCollisions forbids.
func bruteCollision(t1, t2 string, ids []Identity) (Identity, Identity, bool) {
	p1, p2 := parseTemplate(TemplateRef{Template: t1}), parseTemplate(TemplateRef{Template: t2})
	bothT := p1.usesT && p2.usesT
	r1, r2 := make([]string, len(ids)), make([]string, len(ids))
	for i, id := range ids {
		r1[i], _ = render(t1, id.Namespace, id.Name)
		r2[i], _ = render(t2, id.Namespace, id.Name)
	}
	for i, a := range ids {
		for j, b := range ids {
			if a.Namespace == b.Namespace && (!bothT || a.Name == b.Name) {
				continue
			}
			if subjectsOverlap(r1[i], r2[j]) {
				return a, b, true
			}
		}
	}
	return Identity{}, Identity{}, false
}

// TestTemplateCollisionsBruteForce checks the automaton against rendering small identities:
// every collision rendering finds is refused.
func TestTemplateCollisionsBruteForce(t *testing.T) {
	ids := smallIdentities()
	templates := []string{
		"{namespace}.>", "{inbox}.>", "{namespace}-{serviceaccount}.>", "{namespace}{serviceaccount}",
		"{namespace}_{serviceaccount}.>", "{serviceaccount}_{namespace}", "{namespace}-a.>", "a-{namespace}",
		"{namespace}.{serviceaccount}", "{namespace}.{serviceaccount}-a", "{serviceaccount}.>", "a.{namespace}",
		"*.{namespace}", "{namespace}.*", "{namespace}x{serviceaccount}", "{namespace}_a", "{serviceaccount}_x",
		"{namespace}-{namespace}", "x", "{namespace}.{serviceaccount}_x",
	}
	found, refused := 0, 0
	for _, t1 := range templates {
		for _, t2 := range templates {
			p1, p2 := parseTemplate(TemplateRef{Template: t1}), parseTemplate(TemplateRef{Template: t2})
			if (!p1.usesN && !p1.usesT) || (!p2.usesN && !p2.usesT) {
				continue
			}
			err := collide(p1, p2)
			if err != nil {
				refused++
			}
			a, b, ok := bruteCollision(t1, t2, ids)
			if ok {
				found++
			}
			if ok && err == nil {
				t.Errorf("%q for %+v and %q for %+v overlap, but the check passes them", t1, a, t2, b)
			}
		}
	}
	// Rendering finds most of what the check refuses: the check is not just refusing all.
	t.Logf("%d pairs collide by rendering small identities, %d refused", found, refused)
	if found == 0 || refused > found+found/4 {
		t.Errorf("%d pairs collide by rendering, %d refused", found, refused)
	}
}

// FuzzTemplateCollisions checks the collision check on arbitrary pairs of templates: it never
// panics, a pair it shows is real, and it misses nothing rendering small identities finds.
func FuzzTemplateCollisions(f *testing.F) {
	for _, tc := range templateCases {
		all := append(append(append([]string{}, tc.d.Pub...), tc.d.Sub...), tc.d.AnnotationLimit...)
		for _, t1 := range all {
			f.Add(t1, all[0])
		}
	}
	f.Add("{namespace}-a.>", "{namespace}.>")
	ids := smallIdentities()
	f.Fuzz(func(t *testing.T, t1, t2 string) {
		if len(t1) > 64 || len(t2) > 64 {
			return // the automaton is quadratic in a token's length; long ones add nothing
		}
		if _, err := render(t1, "ns", "sa"); err != nil {
			return
		}
		if _, err := render(t2, "ns", "sa"); err != nil {
			return
		}
		err := checkCollisions([]TemplateRef{{List: ListDefaultPub, Template: t1}, {List: ListDefaultSub, Template: t2}})
		var ce *CollisionError
		if err != nil && !errors.As(err, &ce) {
			if errors.Is(err, errTooComplex) {
				return
			}
			t.Fatalf("not a collision: %v", err)
		}
		if ce != nil && ce.SubjectA != "" {
			a, b := ce.A, ce.B
			if a.Name == "" {
				a.Name = "app"
			}
			if b.Name == "" {
				b.Name = "app"
			}
			sa, _ := render(ce.First.Template, a.Namespace, a.Name)
			sb, _ := render(ce.Second.Template, b.Namespace, b.Name)
			if sa != ce.SubjectA || sb != ce.SubjectB || !server.SubjectsCollide(sa, sb) || ce.A == ce.B {
				t.Fatalf("the pair shown is not a collision: %v", err)
			}
		}
		p1, p2 := parseTemplate(TemplateRef{Template: t1}), parseTemplate(TemplateRef{Template: t2})
		if (!p1.usesN && !p1.usesT) || (!p2.usesN && !p2.usesT) {
			return
		}
		for _, pair := range [][2]string{{t1, t1}, {t1, t2}, {t2, t2}} {
			if a, b, found := bruteCollision(pair[0], pair[1], ids); found && err == nil {
				t.Fatalf("%q for %+v and %q for %+v overlap, but the check passes them", pair[0], a, pair[1], b)
			}
		}
	})
}

func ExampleCollisionError() {
	err := PolicyDefaults{Pub: []string{"{namespace}-{serviceaccount}.>"}}.Validate()
	fmt.Println(err)
	// Output: default publish subject "{namespace}-{serviceaccount}.>" renders "a-c-e.>" both for serviceaccount a/c-e and for serviceaccount a-c/e: names can contain '-', letters and digits: separate placeholders with '.' or '_', and give a literal that meets a placeholder, or stands where another template has one, a character names cannot have (such as '_' or upper case)
}
