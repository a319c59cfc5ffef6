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
// A login should be counted when it starts, with Begin, not when its password check fails: a check takes
// tens of milliseconds, and attempts that only learn of each other's failures afterwards all get through
// while the first ones are still being checked. Begin counts the attempt as a failure at once, and the
// attempt's Forgive takes it back when the login turns out not to have failed.
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

// Allow reports whether key may try to log in at now, and if not, how long until it may. It counts
// nothing: a caller that checks passwords concurrently uses Begin instead.
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

// Begin counts a login attempt by key at now as a failure, before anything about it is known, if key
// may try; otherwise it counts nothing and says how long until key may. The maxFailures-th attempt within
// a window blocks key until it is forgiven or the block ends, so that however many attempts arrive at
// once, at most maxFailures are let through per window. The attempt's Forgive takes it back.
func (l *FailureLimiter) Begin(key string, now time.Time) (a Attempt, ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, found := l.keys[key]; found {
		f := e.Value.(*failures)
		if now.Before(f.blockedUntil) {
			return Attempt{}, false, f.blockedUntil.Sub(now)
		}
	}
	f := l.count(key, now)
	return Attempt{l: l, f: f, start: f.start}, true, 0
}

// Attempt is a login attempt counted by Begin.
type Attempt struct {
	l     *FailureLimiter
	f     *failures
	start time.Time // of the window the attempt was counted in
}

// Forgive takes back the attempt's count, for a login that did not fail: it succeeded, or it was refused
// before its password was checked. A block that the attempt completed ends with it. Forgiving an attempt
// twice, one whose window has ended, or one whose key was forgotten since, does nothing; so does
// forgiving the zero Attempt.
func (a *Attempt) Forgive() {
	l := a.l
	if l == nil {
		return
	}
	a.l = nil
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.keys[a.f.key]
	if !found || e.Value != a.f || !a.f.start.Equal(a.start) {
		return
	}
	a.f.count--
	switch {
	case a.f.count <= 0:
		l.remove(e)
	case a.f.count < l.maxFailures:
		a.f.blockedUntil = time.Time{}
	}
}

// Fail records a failed login by key at now, one that Begin did not count.
func (l *FailureLimiter) Fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count(key, now)
}

// count records a failure by key at now, unless key is blocked, and returns its entry. l.mu is held.
func (l *FailureLimiter) count(key string, now time.Time) *failures {
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
		return f // already blocked; the block is not extended
	case l.expired(f, now):
		*f = failures{key: key, start: now}
	}
	f.count++
	if f.count >= l.maxFailures {
		f.blockedUntil = now.Add(l.window)
	}
	return f
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
