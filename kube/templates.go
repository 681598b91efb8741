package kube

import (
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Templates that collide.
//
// The defaults and the annotation limit are templates rendered for each ServiceAccount. One
// that names a ServiceAccount or a namespace promises a subject space of its own to each: a
// default grants it, a limit lets annotations grant within it. If the rendered subjects of two
// identities can overlap, that promise is broken: "{namespace}-{serviceaccount}.>" renders
// "a-b-c.>" for a-b/c and for a/b-c, and a limit "{namespace}-shared.>" lets namespace team
// grant itself namespace team-shared's "team-shared.>". checkCollisions refuses such templates
// at start-up with a pair of identities that collide.
//
// What a placeholder can render is known exactly: a namespace is a DNS label ([a-z0-9-], alnum
// at both ends), a ServiceAccount name a DNS subdomain whose '.' become '_' ({serviceaccount}:
// labels of [a-z0-9-] joined by '_'), {inbox} is "_INBOX_" + namespace + "_" + serviceaccount.
// None contains '.', so a template's tokens are fixed by its literal dots, and two templates'
// subjects overlap only if, token by token, a wildcard or '>' meets anything or the two tokens
// render the same string. Whether two token templates can render the same string with the
// placeholders of the two identities not lined up (start and end at the same place) is decided
// by walking both at once over every string they can render (a product of two small automata).
// Lined up, a placeholder has the same value on both sides; if some token lines up the
// namespace, the identities share it.
//
// Two renderings collide when they can overlap while their namespaces differ, or, if both
// templates name the ServiceAccount, while their ServiceAccounts differ. A template without
// placeholders is the same for everyone by design and is not checked; neither are templates
// overlapping within one namespace when only one of them names the ServiceAccount (a namespace's
// space holds its ServiceAccounts'). Safe separators between placeholders are '.' (a new token)
// and '_' (never in a namespace); a literal that could be part of a name ('-', letters, digits)
// next to a placeholder is not.

// Lists of templates, as errors name them.
const (
	ListDefaultPub      = "default publish"
	ListDefaultSub      = "default subscribe"
	ListAnnotationLimit = "annotation limit"
)

// TemplateRef is one template of one list.
type TemplateRef struct {
	List     string // ListDefaultPub, ListDefaultSub or ListAnnotationLimit
	Template string
}

// CollisionError is a template (First) that, for one identity, can render a subject that
// another template (Second, possibly the same) renders for another identity.
type CollisionError struct {
	First, Second TemplateRef
	// A and B are the identities, Namespace and Name set (Name empty when the template does not
	// name the ServiceAccount); SubjectA and SubjectB what the templates render for them. Both
	// empty when no pair was found to show, only that one exists.
	A, B               Identity
	SubjectA, SubjectB string
}

func (e *CollisionError) Error() string {
	return e.Describe(func(list string) string { return list + " subject" })
}

// Describe is Error with each list named by name (e.g. by its setting).
func (e *CollisionError) Describe(name func(list string) string) string {
	const hint = "names can contain '-', letters and digits: separate placeholders with '.' or '_', and give a literal that meets a placeholder, or stands where another template has one, a character names cannot have (such as '_' or upper case)"
	if e.SubjectA == "" {
		return fmt.Sprintf("%s %q and %s %q can render the same subject for two identities: %s",
			name(e.First.List), e.First.Template, name(e.Second.List), e.Second.Template, hint)
	}
	if e.First == e.Second && e.SubjectA == e.SubjectB {
		return fmt.Sprintf("%s %q renders %q both for %s and for %s: %s",
			name(e.First.List), e.First.Template, e.SubjectA, describeIdentity(e.A), describeIdentity(e.B), hint)
	}
	return fmt.Sprintf("%s %q for %s (%q) overlaps %s %q for %s (%q): %s",
		name(e.First.List), e.First.Template, describeIdentity(e.A), e.SubjectA,
		name(e.Second.List), e.Second.Template, describeIdentity(e.B), e.SubjectB, hint)
}

func describeIdentity(id Identity) string {
	if id.Name == "" {
		return "namespace " + id.Namespace
	}
	return "serviceaccount " + id.Namespace + "/" + id.Name
}

// errTooComplex stops the check of an absurdly involved template rather than spend minutes.
var errTooComplex = errors.New("too involved to check for collisions")

// maxCollisionStates bounds the walk over one pair of tokens.
const maxCollisionStates = 1 << 20

// checkCollisions checks every pair of templates, each with itself too.
func checkCollisions(refs []TemplateRef) error {
	var ts []*template
	for _, r := range refs {
		t := parseTemplate(r)
		if t.usesN || t.usesT {
			ts = append(ts, t)
		}
	}
	for i, t1 := range ts {
		for _, t2 := range ts[i:] {
			// collide(t2, t1) is the same question with the identities swapped.
			if err := collide(t1, t2); err != nil {
				return err
			}
		}
	}
	return nil
}

// A template, split into tokens; each token is literal bytes and placeholders, {inbox}
// expanded.
type template struct {
	ref          TemplateRef
	tokens       [][]item // nil item list: a wildcard token ("*" or ">", see wild)
	wild         []string
	usesN, usesT bool
}

// item is one literal byte (kind 0) or one placeholder: 'N' namespace, 'T' serviceaccount.
type item struct {
	kind byte
	c    byte
}

// parseTemplate splits a template that render accepts.
func parseTemplate(r TemplateRef) *template {
	t := &template{ref: r}
	for tok := range strings.SplitSeq(r.Template, ".") {
		if tok == "*" || tok == ">" {
			t.tokens, t.wild = append(t.tokens, nil), append(t.wild, tok)
			continue
		}
		var items []item
		for rest := tok; rest != ""; {
			if rest[0] != '{' {
				items = append(items, item{c: rest[0]})
				rest = rest[1:]
				continue
			}
			end := strings.IndexByte(rest, '}')
			switch rest[:end+1] {
			case "{namespace}":
				items = append(items, item{kind: 'N'})
				t.usesN = true
			case "{serviceaccount}":
				items = append(items, item{kind: 'T'})
				t.usesT = true
			case "{inbox}":
				for _, c := range []byte("_INBOX_") {
					items = append(items, item{c: c})
				}
				items = append(items, item{kind: 'N'}, item{c: '_'}, item{kind: 'T'})
				t.usesN, t.usesT = true, true
			}
			rest = rest[end+1:]
		}
		t.tokens, t.wild = append(t.tokens, items), append(t.wild, "")
	}
	return t
}

// tokenRelation is what rendering two tokens to the same string allows.
type tokenRelation struct {
	sat bool // they can render the same string
	// unpinned[k] is a witness that they can with no placeholder of kind k lined up (k 0: 'N',
	// 1: 'T'): the values of each side's placeholders, nil if there is none.
	unpinned [2]*witness
}

// witness is the values a walk gave each side's first namespace and serviceaccount
// placeholders ("" if the side has none in the token).
type witness struct {
	ns, sa [2]string
}

// collide reports whether t1 for one identity and t2 for another can overlap while the
// identities differ in a way the templates promise to tell apart.
func collide(t1, t2 *template) error {
	var rels []tokenRelation
	for i := 0; ; i++ {
		end1, end2 := i == len(t1.tokens), i == len(t2.tokens)
		if end1 || end2 {
			if end1 != end2 {
				return nil // different numbers of tokens, no '>' met: no subject matches both
			}
			break
		}
		if t1.wild[i] == ">" || t2.wild[i] == ">" {
			break // the rest matches anything of at least one token, and both have one
		}
		if t1.wild[i] != "" || t2.wild[i] != "" {
			rels = append(rels, tokenRelation{sat: true, unpinned: [2]*witness{{}, {}}})
			continue
		}
		rel, err := relate(t1.tokens[i], t2.tokens[i])
		if err != nil {
			return fmt.Errorf("%s subject %q and %s subject %q: %w", t1.ref.List, t1.ref.Template, t2.ref.List, t2.ref.Template, err)
		}
		if !rel.sat {
			return nil
		}
		rels = append(rels, rel)
	}
	// Namespaces that differ, or serviceaccounts that differ where both templates name one.
	for k, applies := range []bool{true, t1.usesT && t2.usesT} {
		if !applies {
			continue
		}
		possible := true
		for _, r := range rels {
			possible = possible && r.unpinned[k] != nil
		}
		if possible {
			return t1.witness(t2, rels, k)
		}
	}
	return nil
}

// witness builds the colliding pair from the token walks and checks it by rendering; when the
// walks' values do not make a real pair (a placeholder used in several tokens), the error says
// only that one exists.
func (t1 *template) witness(t2 *template, rels []tokenRelation, k int) error {
	e := &CollisionError{First: t1.ref, Second: t2.ref}
	var ns, sa [2]string
	for _, r := range rels {
		for side := range 2 {
			if ns[side] == "" {
				ns[side] = r.unpinned[k].ns[side]
			}
			if sa[side] == "" {
				sa[side] = r.unpinned[k].sa[side]
			}
		}
	}
	// Placeholders no token pinned down get values that differ in what must differ.
	for side, alt := range []string{"x", "y"} {
		if ns[side] == "" {
			ns[side] = alt
			if ns[side] == ns[1-side] {
				ns[side] += "x"
			}
		}
		if sa[side] == "" {
			sa[side] = "app" + alt
		}
	}
	a := Identity{Namespace: ns[0], Name: strings.ReplaceAll(sa[0], "_", ".")}
	b := Identity{Namespace: ns[1], Name: strings.ReplaceAll(sa[1], "_", ".")}
	sa1, err1 := render(t1.ref.Template, a.Namespace, a.Name)
	sa2, err2 := render(t2.ref.Template, b.Namespace, b.Name)
	differ := a.Namespace != b.Namespace || k == 1 && a.Name != b.Name
	if err1 != nil || err2 != nil || !differ || !subjectsOverlap(sa1, sa2) || !validIdentity(a) || !validIdentity(b) {
		return e
	}
	if !t1.usesT {
		a.Name = ""
	}
	if !t2.usesT {
		b.Name = ""
	}
	e.A, e.B, e.SubjectA, e.SubjectB = a, b, sa1, sa2
	return e
}

func validIdentity(id Identity) bool {
	return len(validation.IsDNS1123Label(id.Namespace)) == 0 && len(validation.IsDNS1123Subdomain(id.Name)) == 0
}
