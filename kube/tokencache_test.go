package kube_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

func TestTokenCacheHitAndMiss(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0])
	v, reg := newTestVerifier(t, srv.URL)
	waitKeys(t, v, 1)
	ctx := context.Background()
	a := mustToken(t, is[0], "team-a", "app", testUID)
	b := mustToken(t, is[0], "team-b", "worker", "uid-b")

	for i, c := range []struct {
		token        string
		ns           string
		hits, misses float64
	}{
		{a, "team-a", 0, 1}, // first sight: verified
		{a, "team-a", 1, 1}, // again: from the cache
		{b, "team-b", 1, 2}, // another token: its own verification
		{b, "team-b", 2, 2},
		{a, "team-a", 3, 2},
		{" " + a + "\n", "team-a", 4, 2}, // Verify trims the token before looking it up
	} {
		id, err := v.Verify(ctx, c.token)
		if err != nil {
			t.Fatalf("%d: Verify: %v", i, err)
		}
		if id.Namespace != c.ns {
			t.Errorf("%d: namespace %q, want %q", i, id.Namespace, c.ns)
		}
		hits := metricValue(t, reg, "nats_callout_token_cache_hits_total")
		misses := metricValue(t, reg, "nats_callout_token_cache_misses_total")
		if hits != c.hits || misses != c.misses {
			t.Errorf("%d: hits %v misses %v, want %v and %v", i, hits, misses, c.hits, c.misses)
		}
	}
	if n := v.TokenCacheLen(); n != 2 {
		t.Errorf("%d tokens cached, want 2", n)
	}
}

// A token that differs from a cached one in any byte is verified on its own: the cache never
// answers for it, and a failure is never cached.
func TestTokenCacheNeverServesAnotherToken(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0])
	v, reg := newTestVerifier(t, srv.URL)
	waitKeys(t, v, 1)
	ctx := context.Background()
	good := mustToken(t, is[0], "team-a", "app", testUID)
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatal(err)
	}
	dot := strings.LastIndexByte(good, '.')
	// The same header and claims with a signature of another key: a forgery of the cached token.
	forged := good[:dot+1] + mustToken(t, is[1], "team-a", "app", testUID)[strings.LastIndexByte(mustToken(t, is[1], "team-a", "app", testUID), '.')+1:]
	// A signature character in the middle (the last one's low bits may not count).
	mid := dot + (len(good)-dot)/2
	flip := byte('A')
	if good[mid] == 'A' {
		flip = 'B'
	}
	for name, tok := range map[string]string{
		"forged signature":   forged,
		"signature changed":  good[:mid] + string(flip) + good[mid+1:],
		"claims of another":  mustToken(t, is[0], "team-a", "other", testUID),
		"prefix of the good": good[:len(good)-4],
	} {
		for range 2 { // twice: a failure must not have been cached
			id, err := v.Verify(ctx, tok)
			if name == "claims of another" {
				if err != nil || id.Name != "other" {
					t.Errorf("%s: got %+v, %v; want its own identity", name, id, err)
				}
				continue
			}
			if err == nil {
				t.Errorf("%s: verified as %+v", name, id)
			}
		}
	}
	if hits := metricValue(t, reg, "nats_callout_token_cache_hits_total"); hits != 1 {
		// Only the second "claims of another" is a hit.
		t.Errorf("%v hits, want 1", hits)
	}
	if n := v.TokenCacheLen(); n != 2 {
		t.Errorf("%d tokens cached, want 2 (good, claims of another)", n)
	}
}

func TestTokenCacheExpiry(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0])
	v, reg := newTestVerifier(t, srv.URL)
	waitKeys(t, v, 1)
	now := time.Now()
	v.SetClock(func() time.Time { return now })
	ctx := context.Background()
	tok := mustToken(t, is[0], "team-a", "app", testUID) // exp in an hour
	for range 2 {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if hits := metricValue(t, reg, "nats_callout_token_cache_hits_total"); hits != 1 {
		t.Fatalf("%v hits before expiry, want 1", hits)
	}
	now = now.Add(time.Hour + time.Second) // past exp (the JWT check itself still runs on the real clock)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if hits, misses := metricValue(t, reg, "nats_callout_token_cache_hits_total"), metricValue(t, reg, "nats_callout_token_cache_misses_total"); hits != 1 || misses != 2 {
		t.Errorf("after exp: hits %v misses %v, want 1 and 2 (verified again)", hits, misses)
	}
	if n := v.TokenCacheLen(); n != 0 {
		t.Errorf("%d tokens cached after exp, want 0 (an expired token is not cached again)", n)
	}
}

// When a JWKS refresh no longer carries the key a token verified with, its entry goes, and the
// token is refused.
func TestTokenCacheDropsRemovedKeys(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0], is[1])
	v, reg := newTestVerifier(t, srv.URL, func(c *kube.VerifierConfig) { c.UnknownKIDRefreshInterval = time.Millisecond })
	waitKeys(t, v, 2)
	ctx := context.Background()
	old := mustToken(t, is[0], "team-a", "app", testUID)
	kept := mustToken(t, is[1], "team-b", "app", "uid-b")
	for _, tok := range []string{old, kept, old, kept} {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.TokenCacheLen(); n != 2 {
		t.Fatalf("%d tokens cached, want 2", n)
	}
	// Key 0 rotated out, key 2 in; a token of key 2 (an unknown kid) refreshes the set.
	srv.serve(is[1], is[2])
	if _, err := v.Verify(ctx, mustToken(t, is[2], "team-c", "app", "uid-c")); err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	// The new key's token is not cached by the verification that refreshed the set: a
	// verification that began before a refresh never is.
	if n := v.TokenCacheLen(); n != 1 {
		t.Errorf("%d tokens cached after the rotation, want 1 (kept)", n)
	}
	hits := metricValue(t, reg, "nats_callout_token_cache_hits_total")
	if _, err := v.Verify(ctx, old); err == nil {
		t.Error("a token of the removed key still verifies")
	}
	if _, err := v.Verify(ctx, kept); err != nil {
		t.Errorf("token of the kept key: %v", err)
	}
	if got := metricValue(t, reg, "nats_callout_token_cache_hits_total"); got != hits+1 {
		t.Errorf("%v hits, want %v (the kept key's token only)", got, hits+1)
	}
}

func TestTokenCacheBound(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0])
	v, reg := newTestVerifier(t, srv.URL, func(c *kube.VerifierConfig) { c.TokenCacheSize = 3 })
	waitKeys(t, v, 1)
	ctx := context.Background()
	for i := range 10 {
		tok := mustToken(t, is[0], "team-a", fmt.Sprintf("app-%d", i), testUID)
		id, err := v.Verify(ctx, tok)
		if err != nil || id.Name != fmt.Sprintf("app-%d", i) {
			t.Fatalf("%d: %+v, %v", i, id, err)
		}
		if n := v.TokenCacheLen(); n > 3 {
			t.Fatalf("%d tokens cached, bound is 3", n)
		}
		// The newest is always kept.
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if hits := metricValue(t, reg, "nats_callout_token_cache_hits_total"); hits != 10 {
		t.Errorf("%v hits, want 10", hits)
	}
}

func TestTokenCacheOff(t *testing.T) {
	is := testIssuers(t)
	srv := newJWKSServer(t, is[0])
	v, reg := newTestVerifier(t, srv.URL, func(c *kube.VerifierConfig) { c.TokenCacheSize = -1 })
	waitKeys(t, v, 1)
	tok := mustToken(t, is[0], "team-a", "app", testUID)
	for range 3 {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.TokenCacheLen(); n != 0 {
		t.Errorf("%d tokens cached with the cache off", n)
	}
	for _, name := range []string{"nats_callout_token_cache_hits_total", "nats_callout_token_cache_misses_total"} {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == name {
				t.Errorf("%s registered with the cache off", name)
			}
		}
	}
}
