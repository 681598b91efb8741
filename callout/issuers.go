package callout

import (
	"time"

	"github.com/nats-io/nkeys"
)

// responseSigner picks the key that signs the response to a request whose `sub` names
// account. Server-config mode: the key of that account (auth_callout.issuer). Operator mode:
// account is the callout account, which must be the account of the service's own user; it
// signs with its own key or, with issuer_account set, one of its signing keys.
func (h *Handler) responseSigner(account string) (nkeys.KeyPair, string, bool) {
	keys := h.cfg.SigningKeys()
	if h.cfg.Operator == nil {
		kp, ok := keys.Key(account)
		return kp, "", ok
	}
	if account != h.cfg.Operator.CalloutAccount() {
		return nil, "", false
	}
	return keys.signerFor(account)
}

// heldIssuers names what the service can answer for: the issuer keys in server-config mode,
// the callout account in operator mode.
func (h *Handler) heldIssuers() []string {
	if h.cfg.Operator == nil {
		return h.cfg.SigningKeys().PublicKeys()
	}
	return []string{h.cfg.Operator.CalloutAccount()}
}

// maxUnknownIssuerLogs bounds the expected issuers whose last log time is remembered. Whoever
// can publish callout requests can name a new issuer in each: past this many within a minute,
// further new ones are counted (unknown_issuer) but not logged until older entries expire.
const maxUnknownIssuerLogs = 64

// noteUnknownIssuer remembers the misconfiguration for readiness and logs it at most once a
// minute per expected issuer, for at most maxUnknownIssuerLogs issuers a minute.
func (h *Handler) noteUnknownIssuer(want string, have []string) {
	now := h.cfg.Now()
	h.mu.Lock()
	h.unknownIssuer, h.unknownIssuerAt = want, now
	last, seen := h.unknownIssuerLogs[want]
	if !seen && len(h.unknownIssuerLogs) >= maxUnknownIssuerLogs {
		for k, at := range h.unknownIssuerLogs {
			if now.Sub(at) >= unknownIssuerLogPeriod {
				delete(h.unknownIssuerLogs, k)
			}
		}
	}
	logIt := seen && now.Sub(last) >= unknownIssuerLogPeriod ||
		!seen && len(h.unknownIssuerLogs) < maxUnknownIssuerLogs
	if logIt {
		h.unknownIssuerLogs[want] = now
	}
	h.mu.Unlock()
	switch {
	case !logIt:
	case h.cfg.Operator != nil:
		h.log.Error("nats-server sends callout requests for an account the service's own user is not in; NATS_CREDS_FILE must be a user of the callout account",
			"expected_issuer", want, "held_issuers", have)
	default:
		h.log.Error("nats-server expects responses signed by an issuer account key the service does not hold; add its seed to NATS_SIGNING_KEY_FILE or fix auth_callout.issuer",
			"expected_issuer", want, "held_issuers", have)
	}
}

// UnknownIssuer reports the last issuer a server asked for that the service holds no key for,
// if that happened within the last window and the key is still missing.
func (h *Handler) UnknownIssuer(window time.Duration) (string, bool) {
	h.mu.Lock()
	want, at := h.unknownIssuer, h.unknownIssuerAt
	h.mu.Unlock()
	if want == "" || h.cfg.Now().Sub(at) > window {
		return "", false
	}
	if _, _, ok := h.responseSigner(want); ok {
		return "", false
	}
	return want, true
}
