package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// AccountLabels gives a namespace's nats.io/account label; NamespaceCache is the real one.
type AccountLabels interface {
	Label(namespace string) (value string, ok bool, err error)
}

// AccountsConfig says which accounts a namespace may be placed in.
type AccountsConfig struct {
	// Default is the account of a namespace without the label (NATS_ACCOUNT).
	Default string
	// Allowed are the other accounts a label may name (NATS_ALLOWED_ACCOUNTS).
	Allowed []string
	// Reserved are never targets, listed or not: the callout account and the system account.
	Reserved []string
	// Labels reads the labels; nil places every namespace in Default.
	Labels AccountLabels
}

// Accounts chooses the account of each namespace.
type Accounts struct {
	cfg AccountsConfig
}

// NewAccounts checks that no allowed account is reserved. The default account is not checked:
// a service may place unlabelled namespaces in its callout account, as before tenant accounts.
func NewAccounts(cfg AccountsConfig) (*Accounts, error) {
	if cfg.Default == "" {
		return nil, errors.New("kube: a default account is required")
	}
	for _, a := range cfg.Allowed {
		if slices.Contains(cfg.Reserved, a) {
			return nil, fmt.Errorf("kube: account %s is the callout or the system account and can never be a target", a)
		}
	}
	return &Accounts{cfg: cfg}, nil
}

// AccountChoice is the account a namespace's users are placed in, and why.
type AccountChoice struct {
	Account string
	Why     string
}

// Choose picks the account of namespace: its label's account when the label names an allowed
// one, the default without a label. A label naming any other account, or a reserved one,
// gives ErrAccountNotAllowed; a namespace the cache has not seen gives ErrNotSynced (never the
// default account: the namespace may carry a label the cache does not know yet).
func (a *Accounts) Choose(namespace string) (AccountChoice, error) {
	if a == nil || a.cfg.Labels == nil {
		return AccountChoice{Account: a.defaultAccount(), Why: "the default account (namespace labels are not read)"}, nil
	}
	v, ok, err := a.cfg.Labels.Label(namespace)
	switch {
	case err != nil:
		return AccountChoice{}, err
	case !ok:
		return AccountChoice{Account: a.cfg.Default, Why: "namespace " + namespace + " has no " + LabelAccount + " label: the default account"}, nil
	case slices.Contains(a.cfg.Reserved, v):
		return AccountChoice{}, fmt.Errorf("%w: namespace %s: label %s=%s names the callout or the system account, never a target",
			ErrAccountNotAllowed, namespace, LabelAccount, Clip(v, 64))
	case v == a.cfg.Default || slices.Contains(a.cfg.Allowed, v):
		return AccountChoice{Account: v, Why: "namespace " + namespace + " label " + LabelAccount + "=" + v}, nil
	}
	return AccountChoice{}, fmt.Errorf("%w: namespace %s: label %s=%s names an account outside the allowed accounts",
		ErrAccountNotAllowed, namespace, LabelAccount, Clip(v, 64))
}

func (a *Accounts) defaultAccount() string {
	if a == nil {
		return ""
	}
	return a.cfg.Default
}

// Targets are the accounts users may be placed in: the default, then the allowed ones.
func (a *Accounts) Targets() []string {
	if a == nil {
		return nil
	}
	return append([]string{a.cfg.Default}, a.cfg.Allowed...)
}

// AccountDefaults are one account's own default subjects and annotation limit; a list left out
// (nil) keeps the service-wide one.
type AccountDefaults struct {
	Pub             []string `json:"pub"`
	Sub             []string `json:"sub"`
	AnnotationLimit []string `json:"annotation_subject_limit"`
}

// Apply gives base with the lists d sets replaced.
func (d AccountDefaults) Apply(base PolicyDefaults) PolicyDefaults {
	base = base.orDefault()
	if d.Pub != nil {
		base.Pub = d.Pub
	}
	if d.Sub != nil {
		base.Sub = d.Sub
	}
	if d.AnnotationLimit != nil {
		base.AnnotationLimit = d.AnnotationLimit
	}
	return base
}

// ParseAccountDefaults reads per-account defaults, a JSON object by account:
//
//	{"TEAM_A": {"pub": [">"], "sub": [">"], "annotation_subject_limit": [">"]}}
//
// Each account's lists replace, for that account, the service-wide ones in base; the result
// holds, for each account named, its complete defaults, validated as PolicyDefaults.Validate
// does. Unknown fields, an empty account name and trailing data are errors. An empty text
// means no per-account defaults.
func ParseAccountDefaults(text string, base PolicyDefaults) (map[string]PolicyDefaults, error) {
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	var raw map[string]AccountDefaults
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("not a JSON object of accounts ({\"ACCOUNT\": {\"pub\": [...], \"sub\": [...], \"annotation_subject_limit\": [...]}}): %w", err)
	}
	if err := dec.Decode(&json.RawMessage{}); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the JSON object")
	}
	if raw == nil {
		return nil, errors.New("null: want a JSON object of accounts")
	}
	out := make(map[string]PolicyDefaults, len(raw))
	for acc, d := range raw {
		if strings.TrimSpace(acc) == "" || acc != strings.TrimSpace(acc) {
			return nil, fmt.Errorf("account name %q: must not be empty or padded", acc)
		}
		for _, l := range [][]string{d.Pub, d.Sub, d.AnnotationLimit} {
			for _, s := range l {
				if strings.TrimSpace(s) == "" {
					return nil, fmt.Errorf("account %s: empty subject", acc)
				}
			}
		}
		pd := d.Apply(base)
		if err := pd.Validate(); err != nil {
			return nil, fmt.Errorf("account %s: %w", acc, err)
		}
		out[acc] = pd
	}
	return out, nil
}
