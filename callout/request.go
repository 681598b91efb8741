package callout

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// xkeyHeader carries the server's curve public key on an encrypted request.
const xkeyHeader = "Nats-Server-Xkey"

// curveKeyLen is the length of a curve public key (X...): one prefix byte, 32 key bytes and a
// 2-byte checksum in unpadded base32.
const curveKeyLen = 56

// request is an authorization request that opened, decoded and checked out, with what its
// response is signed and sealed with.
type request struct {
	claims *jwt.AuthorizationRequestClaims
	// serverXKey is the server's curve key when the request came encrypted; xk is ours.
	serverXKey string
	xk         *XKey
	// signer is the issuer account key the server expects the response to be signed with.
	signer        nkeys.KeyPair
	issuerAccount string
}

// openRequest decrypts, decodes and checks a request; an error means it must be dropped, for
// the returned reason. What it learns about the request goes into d as soon as it is known.
func (h *Handler) openRequest(data []byte, hdr nats.Header, d *Decision) (*request, string, error) {
	r := &request{serverXKey: hdr.Get(xkeyHeader), xk: h.cfg.XKey()}
	// Encrypted requests carry the server's curve key in a header and are sealed to ours.
	switch {
	case r.serverXKey == "" && r.xk != nil:
		// Answering in plaintext would let whoever can publish here read and replay the
		// service's answers; a server configured like the service never sends one.
		return nil, ReasonEncryption, fmt.Errorf("%w: the request is not encrypted but an xkey is configured (NATS_XKEY_FILE); the server must have auth_callout.xkey %s", ErrEncryption, r.xk.pub)
	case r.serverXKey == "":
	case r.xk == nil:
		return nil, ReasonEncryption, fmt.Errorf("%w: the server encrypts callouts (auth_callout.xkey) but no xkey is configured (NATS_XKEY_FILE)", ErrEncryption)
	case !validCurveKey(r.serverXKey):
		// Checked before opening: nkeys indexes out of range on a longer string.
		return nil, ReasonEncryption, fmt.Errorf("%w: the Nats-Server-Xkey header is not a curve public key", ErrEncryption)
	default:
		opened, err := r.xk.kp.Open(data, r.serverXKey)
		if err != nil {
			return nil, ReasonEncryption, fmt.Errorf("%w: cannot open the sealed request with xkey %s: %w", ErrEncryption, r.xk.pub, err)
		}
		data = opened
	}
	// The request is read in place: nothing writes to data while it is decoded, and the claims
	// hold copies of what they need, not parts of it.
	req, err := jwt.DecodeAuthorizationRequestClaims(bytesString(data))
	if err != nil {
		return nil, ReasonBadRequest, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	r.claims = req
	d.UserNkey = req.UserNkey
	d.Server = req.Server.Name
	d.Client = req.ClientInformation.Host
	if err := checkRequest(req, h.cfg.Now()); err != nil {
		return nil, ReasonBadRequest, err
	}
	if r.serverXKey != "" && req.Server.XKey != r.serverXKey {
		// The response is sealed to the signed key; a header naming another one was not set
		// by the server that signed the request.
		return nil, ReasonEncryption, fmt.Errorf("%w: the Nats-Server-Xkey header does not match the signed server xkey", ErrEncryption)
	}
	var ok bool
	if r.signer, r.issuerAccount, ok = h.responseSigner(req.Subject); !ok {
		have := h.heldIssuers()
		h.noteUnknownIssuer(req.Subject, have)
		return nil, ReasonUnknownIssuer, fmt.Errorf("%w: server %q expects issuer %s, the service holds %s",
			ErrUnknownIssuer, clipValue(req.Server.Name), req.Subject, strings.Join(have, ","))
	}
	return r, "", nil
}

// validCurveKey reports whether s is a curve public key (X...) of the right length.
func validCurveKey(s string) bool {
	return len(s) == curveKeyLen && nkeys.IsValidPublicCurveKey(s)
}

// checkRequest applies the checks jwt decoding leaves out: expiry, issuer and audience. The
// values its errors quote are clipped: they are the request's, of any length.
func checkRequest(req *jwt.AuthorizationRequestClaims, now time.Time) error {
	if !nkeys.IsValidPublicUserKey(req.UserNkey) {
		// Before Validate, whose error would quote the value whole.
		return fmt.Errorf("%w: user_nkey %q is not a user public key", ErrBadRequest, clipValue(req.UserNkey))
	}
	vr := jwt.CreateValidationResults()
	req.Validate(vr)
	if errs := vr.Errors(); len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrBadRequest, errs[0])
	}
	if req.Expires > 0 && now.Unix() > req.Expires {
		return fmt.Errorf("%w: expired", ErrBadRequest)
	}
	if !nkeys.IsValidPublicServerKey(req.Issuer) || req.Issuer != req.Server.ID {
		return fmt.Errorf("%w: issuer %q is not the sending server %q", ErrBadRequest, clipValue(req.Issuer), clipValue(req.Server.ID))
	}
	if req.Audience != "nats-authorization-request" {
		return fmt.Errorf("%w: audience %q", ErrBadRequest, clipValue(req.Audience))
	}
	if !nkeys.IsValidPublicAccountKey(req.Subject) {
		return fmt.Errorf("%w: subject %q is not an account key", ErrBadRequest, clipValue(req.Subject))
	}
	return nil
}

// respond signs the response (the user JWT, or the denial) and seals it when the request
// came sealed.
func (r *request) respond(userJWT string, denial error) ([]byte, error) {
	rc := jwt.NewAuthorizationResponseClaims(r.claims.UserNkey)
	rc.Audience = r.claims.Server.ID
	rc.IssuerAccount = r.issuerAccount
	if denial != nil {
		rc.Error = denial.Error()
	} else {
		rc.Jwt = userJWT
	}
	tok, err := encodeJWT(&rc.ClaimsData, &rc.GenericFields, jwt.AuthorizationResponseClaim, rc, r.signer)
	if err != nil {
		return nil, err
	}
	if r.serverXKey == "" {
		return tok, nil
	}
	return r.xk.kp.Seal(tok, r.claims.Server.XKey)
}
