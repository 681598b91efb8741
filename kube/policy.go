package kube

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation"
)

// ServiceAccount annotations read by ParsePolicy. Values are comma-separated NATS subjects.
const (
	// AnnotationAllowedPub adds publish subjects to the defaults.
	AnnotationAllowedPub = "nats.io/allowed-pub-subjects"
	// AnnotationAllowedSub adds subscribe subjects to the defaults.
	AnnotationAllowedSub = "nats.io/allowed-sub-subjects"
	// AnnotationDeniedPub denies publish subjects, even ones an allow entry covers.
	AnnotationDeniedPub = "nats.io/denied-pub-subjects"
	// AnnotationDeniedSub denies subscribe subjects, even ones an allow entry covers.
	AnnotationDeniedSub = "nats.io/denied-sub-subjects"
	// AnnotationAllowResponses set to "false" stops the ServiceAccount from replying to requests.
	AnnotationAllowResponses = "nats.io/allow-responses"
)

// annotationPrefix marks annotations meant for this service; unknown ones get a warning.
const annotationPrefix = "nats.io/"

// maxSubjectBytes bounds one subject; longer entries are certainly mistakes.
const maxSubjectBytes = 512

// Permissions are a user's explicit NATS subject permissions. An empty allow list never means
// "everything": ParsePolicy puts ">" in the matching deny list instead.
type Permissions struct {
	PubAllow, PubDeny, SubAllow, SubDeny []string
	// AllowResponses lets the user publish one reply to each request it receives.
	AllowResponses bool
}

// Policy is the parsed permission set of one ServiceAccount.
type Policy struct {
	Permissions Permissions
	// Warnings describe what was ignored: invalid allow entries, an unparsable
	// allow-responses value, unknown nats.io/ annotations. They are worth logging.
	Warnings []string
}

// PolicyDefaults are the subjects every ServiceAccount gets before its annotations apply, and
// the limit its allow annotations must stay within. Entries are templates: {namespace} is the
// namespace, {serviceaccount} the name with '.' replaced by '_' (always one subject token),
// {inbox} the private reply inbox prefix (InboxPrefix). Pub and Sub both nil mean
// DefaultPolicyDefaults()'s.
type PolicyDefaults struct {
	Pub, Sub []string
	// AnnotationLimit, if not empty, bounds what allow annotations can grant: an entry is kept
	// only if every subject it matches is matched by one of these patterns (e.g.
	// "{namespace}.>" keeps each ServiceAccount's grants inside its namespace's subjects);
	// others are dropped with a warning. Defaults and deny annotations are not limited.
	AnnotationLimit []string
}

// DefaultPolicyDefaults returns the built-in defaults: publish and subscribe within the
// namespace, and subscribe to the ServiceAccount's private reply inbox.
func DefaultPolicyDefaults() PolicyDefaults {
	return PolicyDefaults{
		Pub: []string{"{namespace}.>"},
		Sub: []string{"{namespace}.>", "{inbox}.>"},
	}
}

// InboxPrefix returns the private reply inbox prefix of a ServiceAccount,
// "_INBOX_<namespace>_<name>" with dots in the name turned into '_'. Namespaces cannot contain
// '_' or '.', so no two ServiceAccounts share an inbox. Clients use it with
// nats.CustomInboxPrefix or `nats --inbox-prefix`.
func InboxPrefix(namespace, name string) string {
	return "_INBOX_" + namespace + "_" + subjectToken(name)
}

// subjectToken turns a ServiceAccount name into a single subject token.
func subjectToken(name string) string {
	return strings.ReplaceAll(name, ".", "_")
}

// Validate checks that every template uses only known placeholders and renders to a valid
// subject. The zero value is valid.
func (d PolicyDefaults) Validate() error {
	d = d.orDefault()
	for _, list := range []struct {
		kind      string
		templates []string
	}{{"default publish", d.Pub}, {"default subscribe", d.Sub}, {"annotation limit", d.AnnotationLimit}} {
		for _, tmpl := range list.templates {
			if _, err := render(tmpl, "namespace", "service.account"); err != nil {
				return fmt.Errorf("%s subject %q: %w", list.kind, tmpl, err)
			}
		}
	}
	return nil
}

func (d PolicyDefaults) orDefault() PolicyDefaults {
	if d.Pub == nil && d.Sub == nil {
		def := DefaultPolicyDefaults()
		d.Pub, d.Sub = def.Pub, def.Sub
	}
	return d
}

// render fills a template's placeholders and validates the result.
func render(tmpl, namespace, name string) (string, error) {
	var b strings.Builder
	rest := tmpl
	for {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			b.WriteString(rest)
			break
		}
		if rest[i] == '}' {
			return "", errors.New("unbalanced '}'")
		}
		b.WriteString(rest[:i])
		end := strings.IndexByte(rest[i:], '}')
		if end < 0 {
			return "", errors.New("unterminated '{'")
		}
		switch ph := rest[i : i+end+1]; ph {
		case "{namespace}":
			b.WriteString(namespace)
		case "{serviceaccount}":
			b.WriteString(subjectToken(name))
		case "{inbox}":
			b.WriteString(InboxPrefix(namespace, name))
		default:
			return "", fmt.Errorf("unknown placeholder %s", ph)
		}
		rest = rest[i+end+1:]
	}
	s := b.String()
	if err := validSubject(s); err != nil {
		return "", err
	}
	return s, nil
}

// ParsePolicy computes the permissions of ServiceAccount namespace/name from the defaults and
// its annotations. Allow annotations add to the defaults; an invalid allow entry is dropped with
// a warning. Deny annotations go to the deny lists; an invalid deny entry fails the whole
// policy with ErrInvalidPolicy, because ignoring it would widen access. Responses are allowed
// unless nats.io/allow-responses says otherwise; a value that is not a boolean turns them off.
// annotations is only read.
func ParsePolicy(d PolicyDefaults, namespace, name string, annotations map[string]string) (Policy, error) {
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return Policy{}, fmt.Errorf("%w: namespace %q: %s", ErrInvalidPolicy, namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return Policy{}, fmt.Errorf("%w: serviceaccount name %q: %s", ErrInvalidPolicy, name, strings.Join(errs, "; "))
	}
	d = d.orDefault()
	var p Policy
	var w warnings
	var err error
	if p.Permissions.PubAllow, err = renderAll(d.Pub, namespace, name); err != nil {
		return Policy{}, fmt.Errorf("%w: default publish subjects: %w", ErrInvalidPolicy, err)
	}
	if p.Permissions.SubAllow, err = renderAll(d.Sub, namespace, name); err != nil {
		return Policy{}, fmt.Errorf("%w: default subscribe subjects: %w", ErrInvalidPolicy, err)
	}
	limit, err := renderAll(d.AnnotationLimit, namespace, name)
	if err != nil {
		return Policy{}, fmt.Errorf("%w: annotation subject limit: %w", ErrInvalidPolicy, err)
	}
	p.Permissions.PubAllow = addAllowed(p.Permissions.PubAllow, AnnotationAllowedPub, annotations, limit, &w)
	p.Permissions.SubAllow = addAllowed(p.Permissions.SubAllow, AnnotationAllowedSub, annotations, limit, &w)
	if p.Permissions.PubDeny, err = denied(AnnotationDeniedPub, annotations); err != nil {
		return Policy{}, err
	}
	if p.Permissions.SubDeny, err = denied(AnnotationDeniedSub, annotations); err != nil {
		return Policy{}, err
	}
	p.Permissions.AllowResponses = true
	if v, ok := annotations[AnnotationAllowResponses]; ok {
		allow, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			w.add(fmt.Sprintf("%s: %s is not a boolean, responses turned off", AnnotationAllowResponses, quote(v)))
		}
		p.Permissions.AllowResponses = allow && err == nil
	}
	if len(p.Permissions.PubAllow) == 0 && !slices.Contains(p.Permissions.PubDeny, ">") {
		p.Permissions.PubDeny = append(p.Permissions.PubDeny, ">")
	}
	if len(p.Permissions.SubAllow) == 0 && !slices.Contains(p.Permissions.SubDeny, ">") {
		p.Permissions.SubDeny = append(p.Permissions.SubDeny, ">")
	}
	var unknown []string
	for k := range annotations {
		if strings.HasPrefix(k, annotationPrefix) && !knownAnnotation(k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown) // map order must not leak into the result
	for _, k := range unknown {
		w.add(fmt.Sprintf("unknown annotation %s ignored", quote(k)))
	}
	p.Warnings = w.list()
	return p, nil
}

func knownAnnotation(k string) bool {
	switch k {
	case AnnotationAllowedPub, AnnotationAllowedSub, AnnotationDeniedPub, AnnotationDeniedSub, AnnotationAllowResponses:
		return true
	}
	return false
}

func renderAll(templates []string, namespace, name string) ([]string, error) {
	var out []string
	for _, t := range templates {
		s, err := render(t, namespace, name)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", t, err)
		}
		if !slices.Contains(out, s) { // a handful of templates: no set needed
			out = append(out, s)
		}
	}
	return out, nil
}

// addAllowed appends the valid, new entries of an allow annotation to list and records a
// warning for each invalid one and, when limit is not empty, for each one not within it.
func addAllowed(list []string, key string, annotations map[string]string, limit []string, w *warnings) []string {
	seen := make(map[string]bool, len(list))
	for _, s := range list {
		seen[s] = true
	}
	for entry := range entries(annotations[key]) {
		if err := validSubject(entry); err != nil {
			w.add(fmt.Sprintf("%s: dropped %s: %v", key, quote(entry), err))
			continue
		}
		if len(limit) > 0 && !slices.ContainsFunc(limit, func(l string) bool { return subjectWithin(entry, l) }) {
			w.add(fmt.Sprintf("%s: dropped %s: outside the annotation subject limit %s", key, quote(entry), strings.Join(limit, ",")))
			continue
		}
		if !seen[entry] {
			seen[entry] = true
			list = append(list, entry)
		}
	}
	return list
}

// denied parses a deny annotation; any invalid entry is an error.
func denied(key string, annotations map[string]string) ([]string, error) {
	var list []string
	seen := map[string]bool{}
	for entry := range entries(annotations[key]) {
		if err := validSubject(entry); err != nil {
			return nil, fmt.Errorf("%w: %s: %s: %w", ErrInvalidPolicy, key, quote(entry), err)
		}
		if !seen[entry] {
			seen[entry] = true
			list = append(list, entry)
		}
	}
	return list, nil
}

// maxWarnings keeps a ServiceAccount with thousands of bad entries from flooding the log.
const maxWarnings = 10

// warnings collects up to maxWarnings messages and counts the rest.
type warnings struct {
	msgs    []string
	dropped int
}

func (w *warnings) add(msg string) {
	if len(w.msgs) < maxWarnings {
		w.msgs = append(w.msgs, msg)
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
// '*' and '>' only as whole tokens and '>' only last, no whitespace or control characters,
// valid UTF-8. It is stricter than nats-server, which reads "foo*" as a literal token: here
// that is almost certainly a mistake, so it is refused.
func validSubject(s string) error {
	switch {
	case s == "":
		return errors.New("empty subject")
	case len(s) > maxSubjectBytes:
		return fmt.Errorf("longer than %d bytes", maxSubjectBytes)
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return errors.New("empty token")
		case t == ">" && i != len(tokens)-1:
			return errors.New("'>' must be the last token")
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return fmt.Errorf("wildcard inside token %s", quote(t))
		}
		for _, r := range t {
			if r <= ' ' || r == 0x7f || r == utf8.RuneError || (r >= 0x80 && r <= 0x9f) || isSpace(r) {
				return fmt.Errorf("whitespace or control character %U", r)
			}
		}
	}
	return nil
}

// isSpace reports Unicode spaces beyond ASCII, which would make a subject unreadable in logs.
func isSpace(r rune) bool {
	switch r {
	case 0x85, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff:
		return true
	}
	return r >= 0x2000 && r <= 0x200b
}

// quote quotes s for a message, shortened when long.
func quote(s string) string {
	const limit = 64
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}
