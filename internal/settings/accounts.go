package settings

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// Accounts are the settings of tenant accounts: which accounts a namespace's nats.io/account
// label may name, each account's own defaults, and the accounts that are never targets.
type Accounts struct {
	Allowed  string
	Defaults string
	Callout  string
	System   string
}

func accountSettings(a *Accounts) []*Setting {
	return []*Setting{
		String(&a.Allowed, "NATS_ALLOWED_ACCOUNTS", "nats-allowed-accounts", "", "comma-separated accounts a namespace's nats.io/account label may name (default: none, labels are not read)").optional().
			defaultDoc("empty (labels are not read)").
			doc("comma-separated accounts a Namespace's `nats.io/account` label may place its ServiceAccounts in (names in server-config mode, account public keys in operator mode); a label naming another account refuses the login (`account_not_allowed`). Setting it makes the service watch Namespaces' metadata (`list`, `watch` on `namespaces`). See [Tenant accounts](tenant-accounts.md)"),
		String(&a.Defaults, "ACCOUNT_DEFAULTS", "account-defaults", "", `per-account default subjects and annotation limit, JSON: {"ACCOUNT": {"pub": [...], "sub": [...], "annotation_subject_limit": [...]}}`).optional().
			defaultDoc("empty (every account uses the settings above)").
			doc("per-account `DEFAULT_PUB_SUBJECTS`, `DEFAULT_SUB_SUBJECTS` and `ANNOTATION_SUBJECT_LIMIT`, as JSON: `{\"TEAM_A\": {\"pub\": [\">\"], \"sub\": [\">\"], \"annotation_subject_limit\": [\">\"]}}`; a list left out keeps the service-wide one. Accounts must be `NATS_ACCOUNT` or in `NATS_ALLOWED_ACCOUNTS`"),
		String(&a.Callout, "NATS_CALLOUT_ACCOUNT", "nats-callout-account", "AUTH", "server-config mode: the callout account (auth_callout.account), never a target; operator mode takes it from NATS_CREDS_FILE").
			doc("server-config mode: `auth_callout.account`, which is never a target account; operator mode reads it from `NATS_CREDS_FILE`"),
		String(&a.System, "NATS_SYSTEM_ACCOUNT", "nats-system-account", "SYS", "the system account (its public key in operator mode), never a target").
			doc("the system account (its public key in operator mode); never a target, nor is `$SYS`"),
	}
}

// AllowedList is NATS_ALLOWED_ACCOUNTS as a list.
func (a Accounts) AllowedList() []string { return SplitList(a.Allowed) }

// Reserved are the accounts that are never targets; calloutKey is the callout account's
// public key in operator mode ("" in server-config mode).
func (a Accounts) Reserved(calloutKey string) []string {
	out := []string{a.Callout, a.System, "SYS", "$SYS"}
	if calloutKey != "" {
		out = append(out, calloutKey)
	}
	return out
}

// Validate checks the settings against the default account (NATS_ACCOUNT) and the mode, and
// returns the per-account defaults ACCOUNT_DEFAULTS gives over base.
func (a Accounts) Validate(account string, operator bool, base kube.PolicyDefaults) (map[string]kube.PolicyDefaults, error) {
	if a.Callout == "" || a.System == "" {
		return nil, fmt.Errorf("NATS_CALLOUT_ACCOUNT and NATS_SYSTEM_ACCOUNT must not be empty")
	}
	allowed := a.AllowedList()
	reserved := a.Reserved("")
	for _, acc := range allowed {
		switch {
		case operator && !nkeys.IsValidPublicAccountKey(acc):
			return nil, fmt.Errorf("NATS_ALLOWED_ACCOUNTS: %s is not an account public key (A...); in operator mode accounts are named by key: nsc describe account TEAM_A --field sub", quoteShort(acc))
		case len(validation.IsValidLabelValue(acc)) > 0:
			return nil, fmt.Errorf("NATS_ALLOWED_ACCOUNTS: %s cannot be a label value (letters, digits, '-', '_', '.', at most 63): no namespace could name it", quoteShort(acc))
		case slices.Contains(reserved, acc):
			return nil, fmt.Errorf("NATS_ALLOWED_ACCOUNTS: %s is the callout or the system account, never a target", acc)
		case acc == account:
			return nil, fmt.Errorf("NATS_ALLOWED_ACCOUNTS: %s is NATS_ACCOUNT, the account of unlabelled namespaces; list only the others", acc)
		}
	}
	byAccount, err := kube.ParseAccountDefaults(a.Defaults, base)
	if err != nil {
		return nil, fmt.Errorf("ACCOUNT_DEFAULTS: %w", err)
	}
	for acc := range byAccount {
		if acc != account && !slices.Contains(allowed, acc) {
			return nil, fmt.Errorf("ACCOUNT_DEFAULTS: account %s is neither NATS_ACCOUNT nor in NATS_ALLOWED_ACCOUNTS", quoteShort(acc))
		}
	}
	return byAccount, nil
}

// quoteShort quotes a value for an error, clipped.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return fmt.Sprintf("%q", strings.ToValidUTF8(s, "?"))
}
