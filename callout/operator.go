package callout

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Operator (decentralized JWT) mode, as nats-server implements it:
//
//   - The callout is configured in the callout account's JWT (`authorization`: auth_users,
//     allowed_accounts, xkey); requests arrive in that account and their `sub` is its public key.
//   - The response is signed by the callout account's own key or by one of its signing keys; a
//     signing key sets issuer_account to the callout account.
//   - The user JWT places the user in the account that issued it: signed by the target
//     account's key, or by one of its signing keys with issuer_account set to the target. The
//     target must be the callout account or be listed in allowed_accounts.
//   - A scoped signing key makes the server replace the user's permissions by the scope's
//     template, and it refuses user JWTs that carry permissions of their own, so per
//     ServiceAccount permissions need the account's own key or an unscoped signing key.

// OperatorConfig switches a Handler to operator mode. HandlerConfig.Account is then the target
// account's public key.
type OperatorConfig struct {
	// CalloutAccount returns the callout account's public key (required): the account of the
	// service's own user, Credentials.Account. Requests naming another account are dropped.
	CalloutAccount func() string
	// TargetKeys returns the target account's own key or an unscoped signing key of it
	// (required). When the target is the callout account it may hold the same key as
	// HandlerConfig.SigningKeys.
	TargetKeys func() *KeyRing
	// AccountKeys, if set, returns the key ring of another target account (tenant accounts
	// chosen by namespace labels): its own key or an unscoped signing key; nil when the service
	// holds none for it.
	AccountKeys func(account string) *KeyRing
}

// keysFor is the key ring that signs user JWTs placed in account; def is the default target.
func (o *OperatorConfig) keysFor(account, def string) *KeyRing {
	if account == def || o.AccountKeys == nil {
		if account != def {
			return nil
		}
		return o.TargetKeys()
	}
	return o.AccountKeys(account)
}

// HoldsKeyFor reports whether, in operator mode, the service holds a key that can sign users
// into account; in server-config mode the issuer key signs for every account.
func (h *Handler) HoldsKeyFor(account string) bool {
	if h.cfg.Operator == nil {
		return true
	}
	_, _, ok := h.cfg.Operator.keysFor(account, h.cfg.Account).signerFor(account)
	return ok
}

func (o *OperatorConfig) validate(account string) error {
	if o == nil {
		return nil
	}
	switch {
	case !nkeys.IsValidPublicAccountKey(account):
		return fmt.Errorf("callout: in operator mode the target account must be an account public key (A...), got %q", account)
	case o.CalloutAccount == nil:
		return errors.New("callout: operator mode needs the callout account")
	case o.TargetKeys == nil:
		return errors.New("callout: operator mode needs the target account's signing key")
	}
	return nil
}

// Errors of CheckOperatorSetup.
var (
	// ErrOperatorSetup is wrapped by every CheckOperatorSetup error: the files would make
	// nats-server refuse the service's login or every client it answers for.
	ErrOperatorSetup = errors.New("operator-mode setup")
	// ErrScopedSigningKey means the target account key is a scoped signing key. nats-server
	// refuses user JWTs signed by it that carry permissions ("scoped users require no
	// permissions or limits set"), so the service cannot issue per-ServiceAccount permissions
	// with it: it needs the account's own key or an unscoped signing key.
	ErrScopedSigningKey = errors.New("scoped signing key")
)

// ParseAccountJWT reads an account JWT: bare (as `nsc describe account NAME --raw` prints it or
// a resolver stores it) or decorated. Only the JWT's form and its own signature are checked,
// not that the operator trusts it: it is used to explain configuration mistakes, never to
// authorize anything.
func ParseAccountJWT(data []byte) (*jwt.AccountClaims, error) {
	tok, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		return nil, err
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return nil, errors.New("empty file: expected an account JWT")
	}
	if !strings.HasPrefix(tok, "eyJ") || strings.ContainsAny(tok, " \t\r\n") {
		return nil, errors.New("not an account JWT (expected the output of `nsc describe account NAME --raw`)")
	}
	ac, err := jwt.DecodeAccountClaims(tok)
	if err != nil {
		return nil, fmt.Errorf("not an account JWT: %w", err)
	}
	if !nkeys.IsValidPublicAccountKey(ac.Subject) {
		return nil, fmt.Errorf("account JWT subject %q is not an account public key", ac.Subject)
	}
	return ac, nil
}

// OperatorSetup is the operator-mode configuration CheckOperatorSetup cross-checks. The
// account JWTs are optional; each one lets it catch more mistakes at start-up.
type OperatorSetup struct {
	// Credentials is the service's own login (NATS_CREDS_FILE); it must carry a user JWT, whose
	// account is the callout account.
	Credentials *Credentials
	// SigningKeys sign responses (NATS_SIGNING_KEY_FILE): the callout account's key or one of
	// its signing keys.
	SigningKeys *KeyRing
	// TargetAccount is the public key of the account users are placed in (NATS_ACCOUNT).
	TargetAccount string
	// TargetKeys sign user JWTs (NATS_TARGET_SIGNING_KEY_FILE): the target account's key or an
	// unscoped signing key of it.
	TargetKeys *KeyRing
	// XKey is the service's curve key (NATS_XKEY_FILE), nil when not configured.
	XKey *XKey
	// CalloutAccountJWT, if known, is the callout account's JWT
	// (NATS_CALLOUT_ACCOUNT_JWT_FILE).
	CalloutAccountJWT *jwt.AccountClaims
	// TargetAccountJWT, if known, is the target account's JWT (NATS_TARGET_ACCOUNT_JWT_FILE).
	// When the target is the callout account, CalloutAccountJWT serves for both.
	TargetAccountJWT *jwt.AccountClaims
	// Tenants are the other target accounts (NATS_ALLOWED_ACCOUNTS) and what the service holds
	// for them (NATS_TENANT_SIGNING_KEYS_DIR, NATS_TENANT_ACCOUNT_JWTS_DIR).
	Tenants []TenantAccount
}

// TenantAccount is one tenant account of operator mode: its public key, the key ring that signs
// users into it (nil when no key file names it) and, if given, its account JWT.
type TenantAccount struct {
	Account string
	Keys    *KeyRing
	JWT     *jwt.AccountClaims
}

// CheckOperatorSetup reports the first inconsistency in an operator-mode configuration that
// would make nats-server refuse the service's own login or every client it answers for, with
// the nsc command that fixes it where there is one. Every error wraps ErrOperatorSetup; a
// scoped target signing key also wraps ErrScopedSigningKey. Without the account JWTs only the
// keys and the credentials can be compared with each other.
func CheckOperatorSetup(s OperatorSetup) error {
	if s.Credentials == nil || s.Credentials.JWT() == "" {
		return failSetup("NATS_CREDS_FILE must be a .creds file (user JWT and seed) of a user in the callout account, not a bare seed: " +
			"nsc generate creds --account AUTH --name callout")
	}
	callout, service := s.Credentials.Account(), s.Credentials.PublicKey()
	if !nkeys.IsValidPublicAccountKey(s.TargetAccount) {
		// Not echoed: a misplaced seed must not reach the log.
		return failSetup("NATS_ACCOUNT is not an account public key (A...); in operator mode it names the target account by its key: nsc describe account APP --field sub")
	}
	if n := len(s.SigningKeys.PublicKeys()); n != 1 {
		return failSetup("NATS_SIGNING_KEY_FILE holds %d account seeds; operator mode signs with exactly one: the callout account's key or one of its signing keys", n)
	}
	if n := len(s.TargetKeys.PublicKeys()); n != 1 {
		return failSetup("NATS_TARGET_SIGNING_KEY_FILE holds %d account seeds; operator mode signs user JWTs with exactly one: the target account's key or an unscoped signing key of it", n)
	}
	signing, target := s.SigningKeys.PublicKeys()[0], s.TargetKeys.PublicKeys()[0]
	sameAccount := s.TargetAccount == callout
	switch {
	case !sameAccount && signing == s.TargetAccount:
		return failSetup("NATS_SIGNING_KEY_FILE holds the key of the target account %s, but responses are signed for the callout account %s "+
			"(the account of the NATS_CREDS_FILE user %s); one of the two files belongs to the wrong account", s.TargetAccount, callout, service)
	case !sameAccount && target == callout:
		return failSetup("NATS_TARGET_SIGNING_KEY_FILE holds the key of the callout account %s, but users are placed in NATS_ACCOUNT %s: "+
			"it must hold %s's key or an unscoped signing key of it (a user lands in the account that signed it)", callout, s.TargetAccount, s.TargetAccount)
	case !sameAccount && target == signing:
		return failSetup("NATS_SIGNING_KEY_FILE and NATS_TARGET_SIGNING_KEY_FILE hold the same key %s, but the callout account %s and NATS_ACCOUNT %s differ: "+
			"responses are signed with a key of the callout account, user JWTs with a key of the target account", signing, callout, s.TargetAccount)
	}
	if err := checkCalloutAccountJWT(s, callout, service, signing, sameAccount); err != nil {
		return err
	}
	if err := checkTargetAccountJWT(s, target, sameAccount); err != nil {
		return err
	}
	return checkTenants(s, callout)
}

// checkTenants checks each tenant account's key against its account JWT and the callout
// account's allowed_accounts, when they are given. A tenant without a key is not an error
// here: /readyz warns when a namespace is placed there.
func checkTenants(s OperatorSetup, callout string) error {
	for _, t := range s.Tenants {
		keys := t.Keys.PublicKeys()
		if len(keys) != 1 && t.Keys != nil {
			return failSetup("NATS_TENANT_SIGNING_KEYS_DIR/%s.nk holds %d account seeds; it must hold exactly one: the account's key or an unscoped signing key of it", t.Account, len(keys))
		}
		if ac := s.CalloutAccountJWT; ac != nil && !allowsAccount(ac, t.Account) {
			return failSetup("account %s may not place users in tenant account %s (not in allowed_accounts): nsc edit authcallout --account %s --allowed-account %s",
				accountLabel(ac), t.Account, nameOr(ac), t.Account)
		}
		if len(keys) == 0 {
			continue
		}
		if keys[0] == callout || slices.Contains(s.SigningKeys.PublicKeys(), keys[0]) {
			return failSetup("NATS_TENANT_SIGNING_KEYS_DIR/%s.nk holds a key of the callout account; it must hold a key of %s", t.Account, t.Account)
		}
		if t.JWT == nil {
			continue
		}
		name := accountLabel(t.JWT)
		if t.JWT.Subject != t.Account {
			return failSetup("NATS_TENANT_ACCOUNT_JWTS_DIR/%s.jwt is account %s", t.Account, name)
		}
		if keys[0] == t.Account {
			continue
		}
		scope, ok := t.JWT.SigningKeys[keys[0]]
		switch {
		case !ok:
			return failSetup("NATS_TENANT_SIGNING_KEYS_DIR/%s.nk holds %s, which is neither account %s's key nor one of its signing keys (add it with nsc edit account %s --sk %s)",
				t.Account, keys[0], name, nameOr(t.JWT), keys[0])
		case scope != nil:
			return fmt.Errorf("%w: %w: NATS_TENANT_SIGNING_KEYS_DIR/%s.nk holds %s, a scoped signing key of account %s; per-ServiceAccount permissions need an unscoped one (nsc edit account %s --sk generate)",
				ErrOperatorSetup, ErrScopedSigningKey, t.Account, keys[0], name, nameOr(t.JWT))
		}
	}
	return nil
}

// checkCalloutAccountJWT checks the service's login and signing key against the callout
// account's JWT, when it is given.
func checkCalloutAccountJWT(s OperatorSetup, callout, service, signing string, sameAccount bool) error {
	ac := s.CalloutAccountJWT
	if ac == nil {
		return nil
	}
	name := accountLabel(ac)
	switch {
	case ac.Subject != callout:
		return failSetup("NATS_CREDS_FILE is a user of account %s, but NATS_CALLOUT_ACCOUNT_JWT_FILE is account %s: "+
			"the service must log in as a user of the callout account", callout, name)
	case !ac.Authorization.IsEnabled():
		return failSetup("account %s has no auth callout: nsc edit authcallout --account %s --auth-user %s", name, nameOr(ac), service)
	case !ac.Authorization.AuthUsers.Contains(service):
		return failSetup("the service's user %s is not in auth_users of account %s, so its own login would be sent to the callout it serves: "+
			"nsc edit authcallout --account %s --auth-user %s", service, name, nameOr(ac), service)
	case signing != ac.Subject && !hasSigningKey(ac, signing):
		return failSetup("NATS_SIGNING_KEY_FILE holds %s, which is neither account %s's key nor one of its signing keys "+
			"(add it with nsc edit account %s --sk %s, or update NATS_CALLOUT_ACCOUNT_JWT_FILE)", signing, name, nameOr(ac), signing)
	case !sameAccount && !allowsAccount(ac, s.TargetAccount):
		return failSetup("account %s may not place users in NATS_ACCOUNT %s (not in allowed_accounts): "+
			"nsc edit authcallout --account %s --allowed-account %s", name, s.TargetAccount, nameOr(ac), s.TargetAccount)
	case ac.Authorization.XKey != "" && s.XKey == nil:
		return failSetup("account %s encrypts callout requests to xkey %s, but NATS_XKEY_FILE is not set", name, ac.Authorization.XKey)
	case ac.Authorization.XKey != "" && s.XKey.PublicKey() != ac.Authorization.XKey:
		return failSetup("account %s encrypts callout requests to xkey %s, but NATS_XKEY_FILE holds %s", name, ac.Authorization.XKey, s.XKey.PublicKey())
	}
	return nil
}

// checkTargetAccountJWT checks the key that signs user JWTs against the target account's JWT,
// when it is given: it must be the account's key or an unscoped signing key of it.
func checkTargetAccountJWT(s OperatorSetup, target string, sameAccount bool) error {
	ta := s.TargetAccountJWT
	if ta == nil && sameAccount {
		ta = s.CalloutAccountJWT
	}
	if ta == nil {
		return nil
	}
	name := accountLabel(ta)
	if ta.Subject != s.TargetAccount {
		return failSetup("NATS_TARGET_ACCOUNT_JWT_FILE is account %s, but NATS_ACCOUNT is %s", name, s.TargetAccount)
	}
	if target == ta.Subject {
		return nil
	}
	scope, ok := ta.SigningKeys[target]
	switch {
	case !ok:
		return failSetup("NATS_TARGET_SIGNING_KEY_FILE holds %s, which is neither account %s's key nor one of its signing keys "+
			"(add it with nsc edit account %s --sk %s, or update NATS_TARGET_ACCOUNT_JWT_FILE)", target, name, nameOr(ta), target)
	case scope != nil:
		role := ""
		if us, ok := scope.(*jwt.UserScope); ok && us.Role != "" {
			role = fmt.Sprintf(" (role %q)", us.Role)
		}
		return fmt.Errorf("%w: %w: NATS_TARGET_SIGNING_KEY_FILE holds %s, a scoped signing key%s of account %s. nats-server gives users of a scoped key "+
			"the scope's fixed permissions and refuses user JWTs that carry their own, so per-ServiceAccount permissions cannot be issued with it. "+
			"Add an unscoped signing key (nsc edit account %s --sk generate) and put its seed in NATS_TARGET_SIGNING_KEY_FILE",
			ErrOperatorSetup, ErrScopedSigningKey, target, role, name, nameOr(ta))
	}
	return nil
}

// failSetup wraps ErrOperatorSetup with an explanation.
func failSetup(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrOperatorSetup}, args...)...)
}

func hasSigningKey(ac *jwt.AccountClaims, key string) bool {
	_, ok := ac.SigningKeys[key]
	return ok
}

func allowsAccount(ac *jwt.AccountClaims, account string) bool {
	allowed := ac.Authorization.AllowedAccounts
	return allowed.Contains(account) || (len(allowed) == 1 && allowed[0] == jwt.AnyAccount)
}

// accountLabel names an account in messages: "APP (A...)".
func accountLabel(ac *jwt.AccountClaims) string {
	if ac.Name == "" {
		return ac.Subject
	}
	return fmt.Sprintf("%s (%s)", ac.Name, ac.Subject)
}

// nameOr is what to pass to nsc --account: the name if the JWT has one.
func nameOr(ac *jwt.AccountClaims) string {
	if ac.Name == "" {
		return ac.Subject
	}
	return ac.Name
}
