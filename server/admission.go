package server

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"
)

// Defaults of the global password verification budget; see Config.MaxVerifying.
const (
	// verifyRest is how long a verification slot rests after a verification, as a multiple of how long
	// that verification took: 3 keeps each slot verifying at most a quarter of the time.
	verifyRest = 3
	// verifyQueuePerSlot is how many logins may wait per slot by default.
	verifyQueuePerSlot = 4
	// maxVerifyCost caps the duration a slot's rest is computed from, so that one verification that
	// was stalled by the machine cannot stop logins for long.
	maxVerifyCost = 2 * time.Second
	// maxVerifyWait bounds how long one login waits for a slot: the longest a verification and its
	// rest can take, and a second, so that a login behind one other always gets its turn, however
	// slow the machine is (a loaded one, or the race detector, makes a hash take seconds).
	maxVerifyWait = maxVerifyCost*(1+verifyRest) + time.Second
)

// defaultMaxVerifying is Config.MaxVerifying's default: a quarter of the CPUs Go may use, at least one.
func defaultMaxVerifying() int { return max(1, runtime.GOMAXPROCS(0)/4) }

// verifyGate is the global budget of password verifications. A password hash is meant to be expensive:
// argon2id takes tens of milliseconds of a CPU and 19 MiB, and a flood of guesses, each within its
// address's allowance, would otherwise take every CPU from the sessions already running. The gate lets a
// fixed number of verifications run at once, and after each one rests its slot verifyRest times as long
// as the verification took, so that verifications use at most slots/(verifyRest+1) CPUs whatever they
// cost. Logins wait for a slot in arrival order, a bounded number of them; those beyond are refused at
// once, to come back later, rather than queued without bound.
//
// Logins whose password was verified recently (Users' cache) do not come here: they cost no hash.
type verifyGate struct {
	slots   chan time.Time // one per verification that may run at once: when it may start
	maxWait int64
	waiting atomic.Int64
	cycle   atomic.Int64 // the last verification's duration and rest, in ns, for Retry-After
}

func newVerifyGate(slots, queue int) *verifyGate {
	g := &verifyGate{slots: make(chan time.Time, slots), maxWait: int64(queue)}
	for range slots {
		g.slots <- time.Time{}
	}
	return g
}

// acquire waits for a verification slot, in arrival order, until ctx ends or maxVerifyWait has passed.
// If it gets one it returns the function that gives the slot back, to be called once the verification is
// done; otherwise, or at once if the queue is full, it returns nil and how long until a retry may find a
// place.
func (g *verifyGate) acquire(ctx context.Context) (release func(), retryAfter time.Duration) {
	if g.waiting.Add(1) > g.maxWait {
		g.waiting.Add(-1)
		return nil, g.retryAfter()
	}
	timeout := time.NewTimer(maxVerifyWait)
	defer timeout.Stop()
	var notBefore time.Time
	select {
	case notBefore = <-g.slots:
		g.waiting.Add(-1) // the slot is ours; the next in the queue waits for another
	case <-ctx.Done():
		g.waiting.Add(-1)
		return nil, g.retryAfter()
	case <-timeout.C:
		g.waiting.Add(-1)
		return nil, g.retryAfter()
	}
	if rest := time.Until(notBefore); rest > 0 {
		resting := time.NewTimer(rest)
		defer resting.Stop()
		select {
		case <-resting.C:
		case <-ctx.Done():
			g.slots <- notBefore
			return nil, g.retryAfter()
		case <-timeout.C:
			g.slots <- notBefore
			return nil, g.retryAfter()
		}
	}
	start := time.Now()
	var once atomic.Bool
	return func() {
		if !once.CompareAndSwap(false, true) {
			return
		}
		end := time.Now()
		cost := min(end.Sub(start), maxVerifyCost)
		g.cycle.Store(int64(cost * (1 + verifyRest)))
		g.slots <- end.Add(cost * verifyRest)
	}, 0
}

// retryAfter estimates when a refused login may find a place: once the logins waiting now and those
// verifying have had their turn, and at least a second from now.
func (g *verifyGate) retryAfter() time.Duration {
	turns := (g.waiting.Load() + int64(cap(g.slots))) / int64(cap(g.slots))
	return max(time.Second, time.Duration(turns*g.cycle.Load()))
}

// verifiedRecently reports whether a's last verification of name and password succeeded recently enough
// that it is cached, so that Authenticate will not hash again: such a login need not wait for the
// verification budget behind unverified guesses. Only *Users caches.
func verifiedRecently(a Authenticator, name, password string) bool {
	us, ok := a.(*Users)
	if !ok {
		return false
	}
	u, known := us.users[name]
	return known && us.cache.hit(us.cache.sum(name, password, u.hash), us.now())
}
