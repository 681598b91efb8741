package callout

import (
	"bytes"
	"crypto/sha512"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// The user JWT and the response are encoded here rather than by the jwt package's Encode,
// which produces the same token (same header, claims, jti and signature) through several
// intermediate copies of it: encoding is most of a decision's allocations. The result is the
// jwt package's own format, which every test decodes with the jwt package.

// jwtVersion is the claims version the jwt package writes (its libVersion).
const jwtVersion = 2

// jwtHeader is the encoded header every nkey-signed JWT starts with.
var jwtHeader = func() string {
	h, err := json.Marshal(jwt.Header{Type: jwt.TokenTypeJwt, Algorithm: jwt.AlgorithmNkey})
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(h)
}()

var jtiEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// encodeBuffers are reused between encodings: two JSON buffers (claims data, full claims).
type encodeBuffers struct {
	data, claims bytes.Buffer
}

var encodePool = sync.Pool{New: func() any { return new(encodeBuffers) }}

// maxPooledBuffer keeps an unusually large encoding (a ServiceAccount granting many subjects)
// from being held by the pool.
const maxPooledBuffer = 64 << 10

// encodeJWT signs claim, whose common part is cd, with kp as jwt.ClaimsData.encode does: kp
// must be an account key, the issuer and issue time are set, the jti is the hash of the common
// part, and the signature is Ed25519 over header.payload. It returns the token's bytes.
func encodeJWT(cd *jwt.ClaimsData, gf *jwt.GenericFields, claimType jwt.ClaimType, claim any, kp nkeys.KeyPair) ([]byte, error) {
	if kp == nil {
		return nil, errors.New("keypair is required")
	}
	if cd.Subject == "" {
		return nil, errors.New("subject is not set")
	}
	issuer, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	if _, held := kp.(*signer); !held && !nkeys.IsValidPublicAccountKey(issuer) {
		// A held key was checked to be an account key when its file was read.
		return nil, fmt.Errorf("unable to validate expected prefixes - [%d]", nkeys.PrefixByteAccount)
	}
	gf.Type = claimType
	gf.Version = jwtVersion
	cd.Issuer = issuer
	cd.IssuedAt = time.Now().UTC().Unix()
	cd.ID = ""

	b := encodePool.Get().(*encodeBuffers)
	defer func() {
		if b.data.Cap() <= maxPooledBuffer && b.claims.Cap() <= maxPooledBuffer {
			b.data.Reset()
			b.claims.Reset()
			encodePool.Put(b)
		}
	}()
	// jti: the hash of the common claims without it, as the jwt package computes it.
	if err := marshalInto(&b.data, cd); err != nil {
		return nil, err
	}
	sum := sha512.Sum512_256(b.data.Bytes())
	cd.ID = jtiEncoding.EncodeToString(sum[:])
	if err := marshalInto(&b.claims, claim); err != nil {
		return nil, err
	}
	payload := b.claims.Bytes()

	enc := base64.RawURLEncoding
	signedLen := len(jwtHeader) + 1 + enc.EncodedLen(len(payload))
	out := make([]byte, signedLen, signedLen+1+enc.EncodedLen(ed25519SignatureSize))
	n := copy(out, jwtHeader)
	out[n] = '.'
	enc.Encode(out[n+1:], payload)
	sig, err := kp.Sign(out)
	if err != nil {
		return nil, err
	}
	out = append(out, '.')
	out = enc.AppendEncode(out, sig)
	return out, nil
}

// ed25519SignatureSize is the length of an nkey signature.
const ed25519SignatureSize = 64

// marshalInto writes v's JSON (as json.Marshal writes it) to buf.
func marshalInto(buf *bytes.Buffer, v any) error {
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		return err
	}
	buf.Truncate(buf.Len() - 1) // Encode's newline
	return nil
}

// bytesString is b as a string without a copy. b must not be written while the string is in
// use: it is used for the bytes encodeJWT returns, which nothing else holds, and for a request's
// body (the message's own bytes, or the opened ones) while it is decoded.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b)) //nolint:gosec // b is not written while the string is in use (see above)
}
