package callout

import (
	"sync"
)

// requestQueue holds the requests received but not yet taken by a worker, newest first.
//
// In a reconnect storm requests arrive faster than they can be answered, and each one is only
// worth answering while its client and its server still wait for it (the server gives up after
// its authorization timeout, nats.go clients after their connect timeout, and both then cost a
// new callout). Taking the oldest first spends the workers on the requests closest to being
// abandoned, and answers arrive just too late, one retry after another. Taking the newest first
// answers requests while they are still wanted; the oldest wait, and are the ones dropped when
// the queue is full ("overloaded") or dropped without any work once past their deadline
// ("deadline_exceeded"). When requests arrive no faster than they are answered the order makes
// no difference.
type requestQueue struct {
	mu     sync.Mutex
	more   *sync.Cond // signalled when a job is pushed or the queue is closed
	buf    []job      // ring buffer: buf[head] is the oldest of n jobs
	head   int
	n      int
	closed bool
}

func newRequestQueue(size int) *requestQueue {
	q := &requestQueue{buf: make([]job, size)}
	q.more = sync.NewCond(&q.mu)
	return q
}

// push adds j as the newest job. If the queue is full it makes room by removing the oldest
// job and returns it (evicted true): the caller drops it.
func (q *requestQueue) push(j job) (oldest job, evicted bool) {
	q.mu.Lock()
	if q.n == len(q.buf) {
		oldest, evicted = q.buf[q.head], true
		q.buf[q.head] = job{}
		q.head = (q.head + 1) % len(q.buf)
		q.n--
	}
	q.buf[(q.head+q.n)%len(q.buf)] = j
	q.n++
	q.mu.Unlock()
	q.more.Signal()
	return oldest, evicted
}

// pop waits for a job and returns the newest. It returns false once the queue is closed and
// empty.
func (q *requestQueue) pop() (job, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n == 0 {
		if q.closed {
			return job{}, false
		}
		q.more.Wait()
	}
	i := (q.head + q.n - 1) % len(q.buf)
	j := q.buf[i]
	q.buf[i] = job{}
	q.n--
	return j, true
}

// close makes pop return false once the jobs still queued have been taken.
func (q *requestQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.more.Broadcast()
}

// len is how many jobs wait.
func (q *requestQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
