package kube

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

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

// DefaultAnnotationMaxEntries is the default of PolicyDefaults.MaxEntries: how many entries one
// permission annotation may list. Kubernetes lets a ServiceAccount carry 256 KiB of annotations,
// room for tens of thousands of subjects; far fewer are ever meant, and every entry costs work
// on each login and bytes in the user JWT.
const DefaultAnnotationMaxEntries = 1000

// MaxAnnotationMaxEntries is the largest MaxEntries accepted: beyond it a user JWT with four
// full lists approaches nats-server's default max_payload (1 MiB).
const MaxAnnotationMaxEntries = 10000

// DefaultAnnotationMaxBytes is the default of PolicyDefaults.MaxBytes: how many bytes of
// subjects one ServiceAccount's annotations may grant in all (deny and allow lists together).
// A user JWT carries every subject once and its authorization response carries the JWT again,
// encoded, so each granted byte is about three in the reply nats-server reads; at 16 KiB the
// biggest reply stays near 40 KB, far below nats-server's default max_payload (1 MiB), and the
// login costs a few normal ones instead of dozens. Real grants are a few dozen subjects of 20 to
// 60 bytes, 1 to 3 KB: the default leaves room for ten times that.
const DefaultAnnotationMaxBytes = 16 << 10

// MinAnnotationMaxBytes and MaxAnnotationMaxBytes bound MaxBytes: at least one subject of the
// longest kind, at most Kubernetes' limit on all of an object's annotations (256 KiB), beyond
// which the cap could never apply.
const (
	MinAnnotationMaxBytes = maxSubjectBytes
	MaxAnnotationMaxBytes = 256 << 10
)

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
	// Account is the NATS account chosen for the ServiceAccount's namespace, and AccountWhy
	// the reason; Account is empty when the Store chooses none (one account for all).
	Account, AccountWhy string
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
	// MaxEntries bounds the entries (comma-separated subjects, as written) of each permission
	// annotation: an allow annotation with more is cut to its first MaxEntries entries, with a
	// warning; a deny annotation with more fails the policy, since dropping any of its entries
	// would widen access. Zero means DefaultAnnotationMaxEntries.
	MaxEntries int
	// MaxBytes bounds the bytes of subjects all of a ServiceAccount's permission annotations
	// grant together (each kept entry counts its length once; duplicates, invalid entries and
	// entries outside AnnotationLimit do not count). Deny annotations are read first and must
	// fit whole, else the policy fails, since dropping a deny entry would widen access; allow
	// annotations (publish, then subscribe) get what is left, and their entries past it are
	// dropped with a warning. Defaults do not count. Zero means DefaultAnnotationMaxBytes.
	MaxBytes int
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
// subject, that no two identities can get overlapping subjects from the templates (see
// CollisionError), and that MaxEntries and MaxBytes are within range. The zero value is valid.
func (d PolicyDefaults) Validate() error {
	if d.MaxEntries < 0 || d.MaxEntries > MaxAnnotationMaxEntries {
		return fmt.Errorf("entries per annotation: %d is not between 1 and %d", d.MaxEntries, MaxAnnotationMaxEntries)
	}
	if d.MaxBytes != 0 && (d.MaxBytes < MinAnnotationMaxBytes || d.MaxBytes > MaxAnnotationMaxBytes) {
		return fmt.Errorf("annotation subject bytes: %d is not between %d and %d", d.MaxBytes, MinAnnotationMaxBytes, MaxAnnotationMaxBytes)
	}
	d = d.orDefault()
	var refs []TemplateRef
	for _, list := range []struct {
		kind      string
		templates []string
	}{{ListDefaultPub, d.Pub}, {ListDefaultSub, d.Sub}, {ListAnnotationLimit, d.AnnotationLimit}} {
		for _, tmpl := range list.templates {
			if _, err := render(tmpl, "namespace", "service.account"); err != nil {
				return fmt.Errorf("%s subject %q: %w", list.kind, tmpl, err)
			}
			refs = append(refs, TemplateRef{List: list.kind, Template: tmpl})
		}
	}
	return checkCollisions(refs)
}

func (d PolicyDefaults) orDefault() PolicyDefaults {
	if d.Pub == nil && d.Sub == nil {
		def := DefaultPolicyDefaults()
		d.Pub, d.Sub = def.Pub, def.Sub
	}
	if d.MaxEntries == 0 {
		d.MaxEntries = DefaultAnnotationMaxEntries
	}
	if d.MaxBytes == 0 {
		d.MaxBytes = DefaultAnnotationMaxBytes
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
// a warning, and so are the entries beyond d.MaxEntries and those past d.MaxBytes of granted
// subjects. Deny annotations go to the deny lists; an invalid deny entry, more than d.MaxEntries
// of them, or deny lists longer than d.MaxBytes together, fail the whole policy with
// ErrInvalidPolicy, because ignoring any would widen access. Responses are allowed unless
// nats.io/allow-responses says otherwise; a value that is not a boolean turns them off.
// annotations is only read. The work is linear in the entries up to the cap and does not
// look past it.
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
	within := newLimit(limit)
	// Deny lists first: they must fit the byte budget whole; allow lists get what is left.
	budget := d.MaxBytes
	if p.Permissions.PubDeny, err = denied(AnnotationDeniedPub, annotations, d.MaxEntries, &budget, d.MaxBytes); err != nil {
		return Policy{}, err
	}
	if p.Permissions.SubDeny, err = denied(AnnotationDeniedSub, annotations, d.MaxEntries, &budget, d.MaxBytes); err != nil {
		return Policy{}, err
	}
	p.Permissions.PubAllow = addAllowed(p.Permissions.PubAllow, AnnotationAllowedPub, annotations, within, d.MaxEntries, &budget, d.MaxBytes, &w)
	p.Permissions.SubAllow = addAllowed(p.Permissions.SubAllow, AnnotationAllowedSub, annotations, within, d.MaxEntries, &budget, d.MaxBytes, &w)
	p.Permissions.AllowResponses = true
	if v, ok := annotations[AnnotationAllowResponses]; ok {
		allow, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			w.addf("%s: %s is not a boolean, responses turned off", AnnotationAllowResponses, quote(v))
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
		w.addf("unknown annotation %s ignored", quote(k))
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
// warning for each invalid one and for each one not within the limit. Only the first
// maxEntries entries are looked at, and only while *budget (bytes of subjects left of maxBytes)
// holds the next new entry: one warning says there were more, and the rest is not read.
func addAllowed(list []string, key string, annotations map[string]string, within *limit, maxEntries int, budget *int, maxBytes int, w *warnings) []string {
	hint := entriesHint(annotations[key], maxEntries)
	seen := make(map[string]struct{}, len(list)+hint)
	list = slices.Grow(list, hint)
	for _, s := range list {
		seen[s] = struct{}{}
	}
	n := 0
	var tokens []string
	for entry := range entries(annotations[key]) {
		if n++; n > maxEntries {
			w.addf("%s: more than %d entries, only the first %d are used", key, maxEntries, maxEntries)
			break // the rest is not even looked at: the work is bounded by the cap
		}
		var err error
		if tokens, err = subjectTokens(entry, tokens); err != nil {
			w.addf("%s: dropped %s: %v", key, quoteFunc(entry), err)
			continue
		}
		if !within.allows(tokens) {
			w.addf("%s: dropped %s: outside the annotation subject limit %s", key, quoteFunc(entry), within)
			continue
		}
		if _, dup := seen[entry]; !dup {
			if len(entry) > *budget {
				w.addf("%s: annotations grant more than %d bytes of subjects, entries from %s on are not used", key, maxBytes, quoteFunc(entry))
				break // the rest is not looked at either
			}
			*budget -= len(entry)
			seen[entry] = struct{}{}
			list = append(list, entry)
		}
	}
	if len(list) == 0 {
		return nil
	}
	return list
}

// denied parses a deny annotation; any invalid entry, more than maxEntries entries, or entries
// longer together than what is left of the byte budget (*budget, of maxBytes), is an error.
func denied(key string, annotations map[string]string, maxEntries int, budget *int, maxBytes int) ([]string, error) {
	hint := entriesHint(annotations[key], maxEntries)
	if hint == 0 {
		return nil, nil
	}
	list := make([]string, 0, hint)
	seen := make(map[string]struct{}, hint)
	n := 0
	var tokens []string
	for entry := range entries(annotations[key]) {
		if n++; n > maxEntries {
			return nil, fmt.Errorf("%w: %s: more than %d entries (the limit per annotation)", ErrInvalidPolicy, key, maxEntries)
		}
		var err error
		if tokens, err = subjectTokens(entry, tokens); err != nil {
			return nil, fmt.Errorf("%w: %s: %s: %w", ErrInvalidPolicy, key, quote(entry), err)
		}
		if _, dup := seen[entry]; !dup {
			if len(entry) > *budget {
				return nil, fmt.Errorf("%w: %s: deny annotations list more than %d bytes of subjects (the limit per ServiceAccount)", ErrInvalidPolicy, key, maxBytes)
			}
			*budget -= len(entry)
			seen[entry] = struct{}{}
			list = append(list, entry)
		}
	}
	if len(list) == 0 {
		return nil, nil
	}
	return list, nil
}

// entriesHint is how many entries v may hold, at most maxEntries: room to make for them at once
// rather than growing a list and a map entry by entry.
func entriesHint(v string, maxEntries int) int {
	if strings.TrimSpace(v) == "" {
		return 0
	}
	return min(strings.Count(v, ",")+1, maxEntries)
}
