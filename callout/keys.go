package callout

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// KeyRing holds the account keys the service signs with, indexed by public key.
//
// Several keys may be held at once so that an issuer rotation needs no downtime: each callout
// request names in its `sub` the issuer its server expects, and the response is signed with that key.
// A KeyRing is immutable once built; reloading a file builds a new one.
type KeyRing struct {
	keys  map[string]nkeys.KeyPair
	order []string
}

// ParseSigningKeys reads one or more account seeds (SA...) from data: bare seeds one per line,
// decorated nkey blocks, or a mix. Anything that is not an account seed is an error, since
// responses and user JWTs are signed by account keys (an account's signing keys are account keys
// too); a file with no seed at all is an error too.
func ParseSigningKeys(data []byte) (*KeyRing, error) {
	seeds, err := findSeeds(data)
	if err != nil {
		return nil, err
	}
	if len(seeds) == 0 {
		return nil, errors.New("no nkey seed found (expected one or more account seeds starting with SA)")
	}
	kr := &KeyRing{keys: make(map[string]nkeys.KeyPair, len(seeds))}
	for i, kp := range seeds {
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("seed %d: %w", i+1, err)
		}
		if !nkeys.IsValidPublicAccountKey(pub) {
			return nil, fmt.Errorf("seed %d is a %s seed (public key %s); signing keys are account seeds (SA...)%s", i+1, KeyKind(pub), pub, seedHint(pub))
		}
		if _, dup := kr.keys[pub]; dup {
			continue
		}
		signer, err := newSigner(kp, pub)
		if err != nil {
			return nil, fmt.Errorf("seed %d: %w", i+1, err)
		}
		kr.keys[pub] = signer
		kr.order = append(kr.order, pub)
	}
	return kr, nil
}

// signer is an account key pair that keeps its Ed25519 private key and public key. nkeys
// derives both from the seed on every Sign and PublicKey call, which is a sixth of the CPU
// of a decision (two signatures each); the KeyRing signs with the derived key instead.
type signer struct {
	nkeys.KeyPair
	pub  string
	priv ed25519.PrivateKey
}

func newSigner(kp nkeys.KeyPair, pub string) (*signer, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	_, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, err
	}
	if len(raw) != ed25519.SeedSize {
		return nil, fmt.Errorf("seed is %d bytes, want %d", len(raw), ed25519.SeedSize)
	}
	return &signer{KeyPair: kp, pub: pub, priv: ed25519.NewKeyFromSeed(raw)}, nil
}

func (s *signer) PublicKey() (string, error) { return s.pub, nil }

func (s *signer) Sign(input []byte) ([]byte, error) { return ed25519.Sign(s.priv, input), nil }

// Key returns the key pair whose public key is pub.
func (k *KeyRing) Key(pub string) (nkeys.KeyPair, bool) {
	if k == nil {
		return nil, false
	}
	kp, ok := k.keys[pub]
	return kp, ok
}

// PublicKeys lists the public keys held, in file order.
func (k *KeyRing) PublicKeys() []string {
	if k == nil {
		return nil
	}
	return append([]string(nil), k.order...)
}

// signerFor picks the key that signs on behalf of account: the account's own key if held
// (issuerAccount is then empty), otherwise the first key, taken to be one of the account's
// signing keys (issuerAccount is then account, as nats-server requires for a signing key).
func (k *KeyRing) signerFor(account string) (kp nkeys.KeyPair, issuerAccount string, ok bool) {
	if k == nil || len(k.order) == 0 {
		return nil, "", false
	}
	if kp, ok := k.keys[account]; ok {
		return kp, "", true
	}
	return k.keys[k.order[0]], account, true
}

// LogValue shows public keys only.
func (k *KeyRing) LogValue() slog.Value {
	return slog.AnyValue(k.PublicKeys())
}

// XKey is the service's curve key pair for encrypted callouts.
type XKey struct {
	kp  nkeys.KeyPair
	pub string
}

// ParseXKey reads a curve seed (SX...), bare or decorated.
func ParseXKey(data []byte) (*XKey, error) {
	seeds, err := findSeeds(data)
	if err != nil {
		return nil, err
	}
	if len(seeds) != 1 {
		return nil, fmt.Errorf("expected exactly one curve seed (SX...), found %d seeds", len(seeds))
	}
	pub, err := seeds[0].PublicKey()
	if err != nil {
		return nil, err
	}
	if !nkeys.IsValidPublicCurveKey(pub) {
		return nil, fmt.Errorf("seed is a %s seed (public key %s); an xkey must be a curve seed (SX...)", KeyKind(pub), pub)
	}
	return &XKey{kp: seeds[0], pub: pub}, nil
}

// PublicKey returns the X... public key the server config names in auth_callout.xkey.
func (x *XKey) PublicKey() string {
	if x == nil {
		return ""
	}
	return x.pub
}

// LogValue shows the public key only.
func (x *XKey) LogValue() slog.Value { return slog.StringValue(x.PublicKey()) }

// Credentials are the service's own login to nats-server: an nkey seed and, for operator mode,
// the user JWT that goes with it.
type Credentials struct {
	kp      nkeys.KeyPair
	pub     string
	jwt     string
	account string
}

// ParseCredentials reads a .creds file (user JWT + seed) or a bare user seed (SU...).
func ParseCredentials(data []byte) (*Credentials, error) {
	seeds, err := findSeeds(data)
	if err != nil {
		return nil, err
	}
	if len(seeds) != 1 {
		return nil, fmt.Errorf("expected exactly one user seed (SU...), found %d seeds", len(seeds))
	}
	pub, err := seeds[0].PublicKey()
	if err != nil {
		return nil, err
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("seed is a %s seed (public key %s); the service logs in as a user (SU...)", KeyKind(pub), pub)
	}
	c := &Credentials{kp: seeds[0], pub: pub}
	if bytes.Contains(data, []byte("BEGIN NATS USER JWT")) {
		tok, err := nkeys.ParseDecoratedJWT(data)
		if err != nil {
			return nil, fmt.Errorf("user JWT: %w", err)
		}
		uc, err := jwt.DecodeUserClaims(tok)
		if err != nil {
			return nil, fmt.Errorf("user JWT: %w", err)
		}
		if uc.Subject != pub {
			return nil, fmt.Errorf("user JWT is for %s but the seed is for %s", uc.Subject, pub)
		}
		c.jwt = tok
		// A user signed by one of its account's signing keys names the account in
		// issuer_account; otherwise the account itself is the issuer.
		c.account = uc.Issuer
		if uc.IssuerAccount != "" {
			c.account = uc.IssuerAccount
		}
		if !nkeys.IsValidPublicAccountKey(c.account) {
			return nil, fmt.Errorf("user JWT is issued by %s, not by an account", c.account)
		}
	}
	return c, nil
}

// PublicKey is the user nkey (U...) the server knows the service by.
func (c *Credentials) PublicKey() string { return c.pub }

// JWT is the user JWT from a .creds file, or "" for a bare seed.
func (c *Credentials) JWT() string { return c.jwt }

// Account is the public key (A...) of the account the user JWT belongs to, or "" for a bare
// seed. In operator mode it is the callout account: the service's own user lives where the
// server sends callout requests.
func (c *Credentials) Account() string {
	if c == nil {
		return ""
	}
	return c.account
}

// Sign signs a server nonce with the user seed.
func (c *Credentials) Sign(nonce []byte) ([]byte, error) { return c.kp.Sign(nonce) }

// LogValue shows the public key only.
func (c *Credentials) LogValue() slog.Value { return slog.StringValue(c.pub) }

// findSeeds returns every nkey seed in data, one per line, ignoring decoration and blank lines.
func findSeeds(data []byte) ([]nkeys.KeyPair, error) {
	var out []nkeys.KeyPair
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		// Seeds are the only lines starting with 'S' followed by a key-type letter; JWTs start
		// with "eyJ" and decoration with dashes or prose.
		if len(line) < 2 || line[0] != 'S' || !strings.ContainsRune("AUOXNC", rune(line[1])) || strings.ContainsAny(line, " \t") {
			continue
		}
		kp, err := nkeys.FromSeed([]byte(line))
		if err != nil {
			// Never echo the line: it may be a (damaged) seed.
			return nil, fmt.Errorf("line %d looks like a seed but does not parse: %w", n, err)
		}
		out = append(out, kp)
	}
	return out, sc.Err()
}

// seedHint explains the usual mix-ups behind a seed of the wrong kind in a signing key file.
func seedHint(pub string) string {
	switch {
	case nkeys.IsValidPublicOperatorKey(pub):
		return ": an operator key signs accounts, not users; use the account's key or one of its signing keys"
	case nkeys.IsValidPublicUserKey(pub):
		return ": a user seed is a login (NATS_CREDS_FILE), not a signing key"
	default:
		return ""
	}
}

// KeyKind names the type of an nkey public key: user, account, operator, server, curve or
// unknown.
func KeyKind(pub string) string {
	switch {
	case nkeys.IsValidPublicUserKey(pub):
		return "user"
	case nkeys.IsValidPublicAccountKey(pub):
		return "account"
	case nkeys.IsValidPublicOperatorKey(pub):
		return "operator"
	case nkeys.IsValidPublicServerKey(pub):
		return "server"
	case nkeys.IsValidPublicCurveKey(pub):
		return "curve"
	default:
		return "unknown"
	}
}
