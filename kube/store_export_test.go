package kube

// ParseEveryLogin turns the store's policy memo off, for benchmarks that compare the two. Call
// it before the store is used.
func (s *Store) ParseEveryLogin() { s.policies.disabled = true }

// MemoisedPolicies is how many parsed policies the store remembers.
func (s *Store) MemoisedPolicies() int { return s.policies.len() }

// MemoisedBytes is the memo's estimate of what its policies hold.
func (s *Store) MemoisedBytes() int {
	s.policies.mu.RLock()
	defer s.policies.mu.RUnlock()
	return s.policies.bytes
}
