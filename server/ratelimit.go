package server

import (
	"container/list"
	"sync"
	"time"
)

// Defaults for NewFailureLimiter.
const (
	DefaultMaxFailures   = 10
	DefaultFailureWindow = time.Minute
	// maxTrackedKeys bounds a FailureLimiter's memory: beyond it, the key that failed least recently is
	// forgotten.
	maxTrackedKeys = 10000
)

// FailureLimiter blocks a key, such as a source address or a user name, after too many failed logins.
// Once a key has failed maxFailures times within window of its first failure, Allow refuses it for window
// after the last of them. It tracks a bounded number of keys and is safe for concurrent use. Times are
// passed in, so tests need not sleep.
//
// Blocking by user name lets anyone lock a user out for a window; blocking by address does not stop an
// attacker with many addresses, so IPv6 sources are best keyed by prefix. The server clears only user
// names with Succeed: clearing an address would let an attacker who holds one valid account reset its
// count between guesses at others.
type FailureLimiter struct {
	maxFailures int
	window      time.Duration
	maxKeys     int

	mu    sync.Mutex
	keys  map[string]*list.Element
	order list.List // of *failures, least recently failed first
}

type failures struct {
	key          string
	count        int
	start        time.Time // first failure of the current window
	blockedUntil time.Time
}

// NewFailureLimiter returns a limiter that blocks a key for window after maxFailures failures within
// window. Zero or negative arguments mean DefaultMaxFailures and DefaultFailureWindow.
func NewFailureLimiter(maxFailures int, window time.Duration) *FailureLimiter {
	if maxFailures <= 0 {
		maxFailures = DefaultMaxFailures
	}
	if window <= 0 {
		window = DefaultFailureWindow
	}
	return &FailureLimiter{
		maxFailures: maxFailures,
		window:      window,
		maxKeys:     maxTrackedKeys,
		keys:        make(map[string]*list.Element),
	}
}

// Allow reports whether key may try to log in at now, and if not, how long until it may.
func (l *FailureLimiter) Allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.keys[key]
	if !found {
		return true, 0
	}
	f := e.Value.(*failures)
	if now.Before(f.blockedUntil) {
		return false, f.blockedUntil.Sub(now)
	}
	if l.expired(f, now) {
		l.remove(e)
	}
	return true, 0
}

// Fail records a failed login by key at now.
func (l *FailureLimiter) Fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.keys[key]
	if !found {
		if len(l.keys) >= l.maxKeys {
			l.remove(l.order.Front())
		}
		e = l.order.PushBack(&failures{key: key, start: now})
		l.keys[key] = e
	} else {
		l.order.MoveToBack(e)
	}
	f := e.Value.(*failures)
	switch {
	case now.Before(f.blockedUntil):
		return // already blocked; the block is not extended
	case l.expired(f, now):
		*f = failures{key: key, start: now}
	}
	f.count++
	if f.count >= l.maxFailures {
		f.blockedUntil = now.Add(l.window)
	}
}

// Succeed forgets the failures of key, after a successful login.
func (l *FailureLimiter) Succeed(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, found := l.keys[key]; found {
		l.remove(e)
	}
}

// expired reports whether f's window and block are both over, so that it no longer counts.
func (l *FailureLimiter) expired(f *failures, now time.Time) bool {
	return !now.Before(f.start.Add(l.window)) && !now.Before(f.blockedUntil)
}

func (l *FailureLimiter) remove(e *list.Element) {
	l.order.Remove(e)
	delete(l.keys, e.Value.(*failures).key)
}

// tracked returns the number of keys held.
func (l *FailureLimiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}
