package callout

import (
	"bytes"
	"testing"

	"github.com/nats-io/nkeys"
)

// The KeyRing's signers sign exactly as the nkeys key pair of the same seed does (Ed25519 is
// deterministic), and their signatures verify with the public key.
func TestKeyRingSignerMatchesNkeys(t *testing.T) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	kr, err := ParseSigningKeys(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	got, ok := kr.Key(pub)
	if !ok {
		t.Fatalf("key %s not in the ring", pub)
	}
	if p, err := got.PublicKey(); err != nil || p != pub {
		t.Fatalf("PublicKey = %q, %v; want %q", p, err, pub)
	}
	msg := []byte("callout response")
	want, _ := kp.Sign(msg)
	sig, err := got.Sign(msg)
	if err != nil || !bytes.Equal(sig, want) {
		t.Fatalf("signature differs from nkeys': %x vs %x (%v)", sig, want, err)
	}
	if err := kp.Verify(msg, sig); err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
	if err := kp.Verify([]byte("other"), sig); err == nil {
		t.Fatal("signature verifies for another message")
	}
}
