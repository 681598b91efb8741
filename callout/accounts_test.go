package callout_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/testsupport"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// The account the policy source chooses is the user JWT's audience (server-config mode), the
// decision's and the metric's account; a refused label is account_not_allowed.
func TestHandlerAccounts(t *testing.T) {
	account := "TEAM_A"
	var refuse error
	r := newRig(t, rigOptions{policy: func(_ kube.Identity) (kube.Policy, error) {
		if refuse != nil {
			return kube.Policy{}, refuse
		}
		return kube.Policy{Account: account, AccountWhy: "label", Permissions: kube.Permissions{PubAllow: []string{">"}, SubAllow: []string{">"}}}, nil
	}})
	uc, d := grantUser(t, r)
	if d.Account != "TEAM_A" {
		t.Fatalf("decision %+v", d)
	}
	if uc.Audience != "TEAM_A" {
		t.Errorf("user JWT audience %q, want the chosen account TEAM_A", uc.Audience)
	}
	if got := testsupport.Metric(t, r.reg, "nats_callout_requests_total", "result", "allowed", "account", "TEAM_A"); got != 1 {
		t.Errorf("allowed{account=TEAM_A} = %g, want 1", got)
	}
	if !strings.Contains(strings.Join(r.decisionLines(), "\n"), `"account":"TEAM_A"`) {
		t.Errorf("decision log lacks the account: %v", r.decisionLines())
	}

	// No account chosen (labels not read): NATS_ACCOUNT.
	account = ""
	if _, d := r.handle(); d.Account != "APP" {
		t.Errorf("account %q, want APP", d.Account)
	}

	refuse = fmt.Errorf("%w: namespace ns: label names OTHER", kube.ErrAccountNotAllowed)
	reply, d := r.handle()
	if d.Result != callout.ResultDenied || d.Reason != callout.ReasonAccountNotAllowed {
		t.Fatalf("decision %s/%s, want denied/account_not_allowed", d.Result, d.Reason)
	}
	if rc, err := r.response(reply); err != nil || rc.Error != callout.ReasonAccountNotAllowed {
		t.Errorf("response %+v, %v", rc, err)
	}

	// Not seen by the namespace cache yet: dropped, so that a peer or a retry answers.
	refuse = fmt.Errorf("%w: namespace ns not listed yet", kube.ErrNotSynced)
	if reply, d := r.handle(); reply != nil || d.Reason != callout.ReasonNotReady {
		t.Errorf("decision %s/%s, want dropped/not_ready", d.Result, d.Reason)
	}
}

// In operator mode a tenant account's user JWT is signed by that account's key, and an
// account without one is refused (account_key_missing).
func TestHandlerAccountKeysOperator(t *testing.T) {
	tenant, tenantSK := fixedKey(t, nkeys.PrefixByteAccount, 20), fixedKey(t, nkeys.PrefixByteAccount, 21)
	tenantPub := testsupport.PublicKey(t, tenant)
	rings := map[string]func() *callout.KeyRing{tenantPub: fixedRing(t, tenantSK)}
	account := tenantPub
	r := newRig(t, rigOptions{
		operator: true,
		policy: func(_ kube.Identity) (kube.Policy, error) {
			return kube.Policy{Account: account, Permissions: kube.Permissions{PubAllow: []string{">"}, SubAllow: []string{">"}}}, nil
		},
		accountKeys: func(a string) *callout.KeyRing {
			if f, ok := rings[a]; ok {
				return f()
			}
			return nil
		},
	})
	if !r.h.HoldsKeyFor(tenantPub) || r.h.HoldsKeyFor(testsupport.PublicKey(t, r.issuer)) {
		t.Error("HoldsKeyFor: want the tenant held and the callout account not")
	}
	uc, _ := grantUser(t, r)
	if uc.Issuer != testsupport.PublicKey(t, tenantSK) || uc.IssuerAccount != tenantPub {
		t.Errorf("user JWT issued by %s for %s, want the tenant's signing key for the tenant", uc.Issuer, uc.IssuerAccount)
	}

	account = testsupport.PublicKey(t, fixedKey(t, nkeys.PrefixByteAccount, 22))
	if _, d := r.handle(); d.Result != callout.ResultDenied || d.Reason != callout.ReasonAccountKeyMissing {
		t.Errorf("account without a key: %s/%s, want denied/account_key_missing", d.Result, d.Reason)
	}
}
