package kube

import (
	"crypto/sha256"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultTokenCacheSize is how many verified tokens a Verifier remembers unless told otherwise.
// An entry holds the token's SHA-256 and the Identity it verified to: about 0.5 KB, so 5 MB at
// this size.
const DefaultTokenCacheSize = 10000

// tokenKey is the SHA-256 of a token: the cache never holds a token itself.
type tokenKey [sha256.Size]byte

// verifiedToken is what a token verified to, and with which key.
type verifiedToken struct {
	id  Identity
	kid string
}

// tokenCache remembers tokens that verified, so that a client reconnecting with the token it
// already presented costs a hash and a map lookup instead of a signature check. Only successes
// are kept. An entry is served until the token's exp (never within the verifier's leeway past
// it: such a token is verified again, and refused with its own reason), and dropped when a JWKS
// refresh no longer carries the key that verified it. When the cache is full, expired entries
// are dropped first (at most once a minute), then an arbitrary one. It is safe for concurrent use.
type tokenCache struct {
	max    int
	hits   prometheus.Counter
	misses prometheus.Counter

	mu      sync.Mutex
	entries map[tokenKey]verifiedToken
	// gen counts key-set replacements: a verification that began before one is not cached,
	// since the key it used may just have been removed.
	gen uint64
	// nextSweep is when a full cache may next be swept of expired entries.
	nextSweep time.Time
}

// sweepInterval is the least time between two sweeps of expired entries from a full cache.
const sweepInterval = time.Minute

func newTokenCache(size int, hits, misses prometheus.Counter) *tokenCache {
	return &tokenCache{max: size, hits: hits, misses: misses, entries: make(map[tokenKey]verifiedToken, min(size, 1024))}
}

// tokenHash is the cache key of token.
func tokenHash(token string) tokenKey {
	// Copied through a small buffer: []byte(token) would allocate a copy of the whole token.
	h := sha256.New()
	var buf [256]byte
	for len(token) > 0 {
		n := copy(buf[:], token)
		_, _ = h.Write(buf[:n])
		token = token[n:]
	}
	var k tokenKey
	h.Sum(k[:0])
	return k
}

// get returns the identity token verified to, if it is cached and unexpired at now, and the
// generation to pass to put after verifying it otherwise.
func (c *tokenCache) get(k tokenKey, now time.Time) (Identity, uint64, bool) {
	c.mu.Lock()
	e, ok := c.entries[k]
	if ok && !now.Before(e.id.Expiry) {
		delete(c.entries, k)
		ok = false
	}
	gen := c.gen
	c.mu.Unlock()
	if ok {
		c.hits.Inc()
		return e.id, gen, true
	}
	c.misses.Inc()
	return Identity{}, gen, false
}

// put remembers a verified token, unless the key set changed since gen.
func (c *tokenCache) put(k tokenKey, id Identity, kid string, gen uint64, now time.Time) {
	if !now.Before(id.Expiry) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		if !now.Before(c.nextSweep) {
			// At most once per sweepInterval: a full sweep reads every entry, too much to repeat
			// for each new token while more distinct tokens arrive than the cache holds.
			c.nextSweep = now.Add(sweepInterval)
			for key, e := range c.entries {
				if !now.Before(e.id.Expiry) {
					delete(c.entries, key)
				}
			}
		}
		for key := range c.entries {
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, key)
		}
	}
	c.entries[k] = verifiedToken{id: id, kid: kid}
}

// keysReplaced drops the entries whose key is not among kids (sorted), after a JWKS refresh.
func (c *tokenCache) keysReplaced(kids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for key, e := range c.entries {
		if _, found := slices.BinarySearch(kids, e.kid); !found {
			delete(c.entries, key)
		}
	}
}

// len is the number of entries.
func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
