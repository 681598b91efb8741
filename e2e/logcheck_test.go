//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"
)

// The log check must be able to fail: it finds each kind of secret the suite mints.
func TestLogCheckFindsSecrets(t *testing.T) {
	sa := newServiceAccount(t, newNamespace(t, "logcheck"), "leaky", nil)
	clean := `{"level":"INFO","msg":"callout decision","user_nkey":"UDOZZ4PUO67ZSVCIHP5KC42MB57PW7ZANUEG5M2QQCYV4ANLESSZDI56","issuers":["ABOZKITIQ5TK6C65QTYBWJVUN3Y746KHYNRHOE6NZ2AEMZAZADXSHHQV"]}`
	if leaks := leaksIn(clean); len(leaks) > 0 {
		t.Errorf("public keys reported as leaks: %v", leaks)
	}
	for what, secret := range map[string]string{
		"token":       token(t, sa.Namespace, sa.Name),
		"forged":      forge(t, realisticClaims(sa, time.Hour), nil),
		"user seed":   string(seedOf(t, newUserKey(t))),
		"issuer seed": string(seedOf(t, newAccountKey(t))),
		"curve seed":  string(seedOf(t, newCurveKey(t))),
	} {
		log := strings.Replace(clean, "callout decision", "oops "+secret, 1)
		if leaks := leaksIn(log); len(leaks) == 0 {
			t.Errorf("a %s in the log went unnoticed", what)
		}
	}
	password := "static-" + randomHex(8)
	suite.noteSecret(password, "static user password")
	if leaks := leaksIn(clean + password); len(leaks) == 0 {
		t.Error("a password in the log went unnoticed")
	}
}
