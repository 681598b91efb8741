package installer_test

import (
	"testing"

	"github.com/nats-io/nkeys"
)

// pub returns kp's public key.
func pub(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// seed returns kp's seed.
func seed(t testing.TB, kp nkeys.KeyPair) []byte {
	t.Helper()
	s, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
