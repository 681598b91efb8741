package kube

import "time"

// MaxTokenBytes is the longest token Verify parses, for the external tests.
const MaxTokenBytes = maxTokenBytes

// SetClock replaces the clock the verified-token cache reads.
func (v *Verifier) SetClock(now func() time.Time) { v.now = now }

// TokenCacheLen is the number of tokens the verified-token cache holds.
func (v *Verifier) TokenCacheLen() int {
	if v.cache == nil {
		return 0
	}
	return v.cache.len()
}
