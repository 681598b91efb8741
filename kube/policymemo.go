package kube

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// maxMemoBytes bounds what policyMemo holds, estimated by memoCost: 8 MiB is about 10,000
// ServiceAccounts with a few annotation subjects each, or 100 at the caps (ANNOTATION_MAX_BYTES
// and ANNOTATION_MAX_ENTRIES).
const maxMemoBytes = 8 << 20

// policyMemo remembers the parsed policy of each ServiceAccount version that logged in, keyed by
// uid and checked against the resourceVersion, so that annotations are parsed once per version
// rather than once per login. The defaults and limits the policies were parsed with are fixed
// for the life of the Store. An entry goes when its ServiceAccount changes or is deleted (the
// informer's handlers call forget), and arbitrary entries go when the memo is full.
type policyMemo struct {
	mu      sync.RWMutex
	entries map[types.UID]*memoEntry
	bytes   int
	// disabled parses on every call; for benchmarks comparing the two.
	disabled bool
}

type memoEntry struct {
	resourceVersion string
	account         string
	policy          Policy
	err             error
	cost            int
}

// get returns the policy remembered for this version of sa in account, if any.
func (m *policyMemo) get(sa *cachedObject, account string) (Policy, bool, error) {
	m.mu.RLock()
	e, ok := m.entries[sa.UID]
	m.mu.RUnlock()
	if !ok || e.resourceVersion != sa.ResourceVersion || e.account != account {
		return Policy{}, false, nil
	}
	return e.policy, true, e.err
}

// put remembers the policy of sa in account if current() (called under the lock) says sa is still the
// cached version. Objects without a resourceVersion are not remembered.
func (m *policyMemo) put(sa *cachedObject, account string, p Policy, err error, current func() bool) {
	if m.disabled || sa.ResourceVersion == "" || sa.UID == "" {
		return
	}
	e := &memoEntry{resourceVersion: sa.ResourceVersion, account: account, policy: p, err: err, cost: memoCost(sa, p, err) + len(account)}
	if e.cost > maxMemoBytes/16 {
		return // would crowd out too many others
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !current() {
		return
	}
	if m.entries == nil {
		m.entries = make(map[types.UID]*memoEntry)
	}
	m.removeLocked(sa.UID)
	for uid := range m.entries { // random order: evicts arbitrary entries
		if m.bytes+e.cost <= maxMemoBytes {
			break
		}
		m.removeLocked(uid)
	}
	m.entries[sa.UID] = e
	m.bytes += e.cost
}

// forget drops what is remembered for uid.
func (m *policyMemo) forget(uid types.UID) {
	m.mu.Lock()
	m.removeLocked(uid)
	m.mu.Unlock()
}

func (m *policyMemo) removeLocked(uid types.UID) {
	if e, ok := m.entries[uid]; ok {
		m.bytes -= e.cost
		delete(m.entries, uid)
	}
}

// len is how many policies are remembered.
func (m *policyMemo) len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.entries)
}

// memoCost estimates the bytes an entry keeps alive: the entry and map slot, the slices'
// backing arrays, and the strings (annotation subjects share the cached object's memory while
// it lives, but are counted as if they did not).
func memoCost(sa *cachedObject, p Policy, err error) int {
	n := 256 + len(sa.UID) + len(sa.ResourceVersion)
	for _, l := range [][]string{p.Permissions.PubAllow, p.Permissions.PubDeny, p.Permissions.SubAllow, p.Permissions.SubDeny, p.Warnings} {
		n += 24 + 16*cap(l)
		for _, s := range l {
			n += len(s)
		}
	}
	if err != nil {
		n += len(err.Error())
	}
	return n
}
