package server

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestFailureLimiter(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_000_000, 0)
	type step struct {
		at        time.Duration // since t0
		fail      bool          // record a failure before calling Allow
		succeed   bool          // call Succeed before calling Allow
		wantOK    bool          // Allow's answer after the step
		wantRetry time.Duration // and its retryAfter
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"allowed before any failure", []step{{at: 0, wantOK: true}}},
		{"blocked at the third failure", []step{
			{at: 0, fail: true, wantOK: true},
			{at: time.Second, fail: true, wantOK: true},
			{at: 2 * time.Second, fail: true, wantOK: false, wantRetry: time.Minute},
		}},
		{"unblocked after the window", []step{
			{at: 0, fail: true, wantOK: true},
			{at: 0, fail: true, wantOK: true},
			{at: 10 * time.Second, fail: true, wantOK: false, wantRetry: time.Minute},
			{at: 69 * time.Second, wantOK: false, wantRetry: time.Second},
			{at: 70 * time.Second, wantOK: true},
			{at: 71 * time.Second, fail: true, wantOK: true}, // counting starts afresh
		}},
		{"failures in the block do not extend it", []step{
			{at: 0, fail: true, wantOK: true},
			{at: 0, fail: true, wantOK: true},
			{at: 0, fail: true, wantRetry: time.Minute},
			{at: 30 * time.Second, fail: true, wantRetry: 30 * time.Second},
			{at: time.Minute, wantOK: true},
		}},
		{"failures spread beyond the window", []step{
			{at: 0, fail: true, wantOK: true},
			{at: 30 * time.Second, fail: true, wantOK: true},
			{at: 60 * time.Second, fail: true, wantOK: true},
			{at: 90 * time.Second, fail: true, wantOK: true},
		}},
		{"success forgets failures", []step{
			{at: 0, fail: true, wantOK: true},
			{at: 0, fail: true, wantOK: true},
			{at: 0, succeed: true, wantOK: true},
			{at: 0, fail: true, wantOK: true},
			{at: 0, fail: true, wantOK: true},
		}},
		{"success ends a block", []step{
			{at: 0, fail: true, wantOK: true},
			{at: 0, fail: true, wantOK: true},
			{at: 0, fail: true, wantRetry: time.Minute},
			{at: 0, succeed: true, wantOK: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := NewFailureLimiter(3, time.Minute)
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				switch {
				case s.fail:
					l.Fail("10.0.0.1", now)
				case s.succeed:
					l.Succeed("10.0.0.1")
				}
				ok, retry := l.Allow("10.0.0.1", now)
				if ok != s.wantOK || retry != s.wantRetry {
					t.Fatalf("step %d: Allow = %v, %v; want %v, %v", i, ok, retry, s.wantOK, s.wantRetry)
				}
				if ok, _ := l.Allow("10.0.0.2", now); !ok {
					t.Fatalf("step %d: another key is blocked", i)
				}
			}
		})
	}
}

func TestFailureLimiterDefaults(t *testing.T) {
	t.Parallel()
	l := NewFailureLimiter(0, -1)
	now := time.Unix(1_000_000, 0)
	for i := range DefaultMaxFailures {
		if ok, _ := l.Allow("k", now); !ok {
			t.Fatalf("blocked after %d failures, want %d", i, DefaultMaxFailures)
		}
		l.Fail("k", now)
	}
	if ok, retry := l.Allow("k", now); ok || retry != DefaultFailureWindow {
		t.Errorf("Allow = %v, %v; want false, %v", ok, retry, DefaultFailureWindow)
	}
}

func TestFailureLimiterBoundsMemory(t *testing.T) {
	t.Parallel()
	l := NewFailureLimiter(1, time.Minute)
	l.maxKeys = 3
	now := time.Unix(1_000_000, 0)
	for i := range 5 {
		l.Fail("k"+strconv.Itoa(i), now)
	}
	if n := l.tracked(); n != 3 {
		t.Errorf("tracking %d keys, want 3", n)
	}
	for key, wantOK := range map[string]bool{"k0": true, "k1": true, "k2": false, "k4": false} {
		if ok, _ := l.Allow(key, now); ok != wantOK {
			t.Errorf("Allow(%s) = %v, want %v (the least recently failed keys are forgotten)", key, ok, wantOK)
		}
	}

	// Expired entries are dropped when looked at.
	later := now.Add(time.Hour)
	for _, key := range []string{"k2", "k3", "k4"} {
		l.Allow(key, later)
	}
	if n := l.tracked(); n != 0 {
		t.Errorf("tracking %d keys after they expired, want 0", n)
	}
}

func TestFailureLimiterConcurrent(t *testing.T) {
	t.Parallel()
	l := NewFailureLimiter(5, time.Minute)
	l.maxKeys = 16
	now := time.Unix(1_000_000, 0)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				key := strconv.Itoa((g + i) % 32)
				l.Allow(key, now)
				l.Fail(key, now)
				if i%7 == 0 {
					l.Succeed(key)
				}
			}
		})
	}
	wg.Wait()
	if n := l.tracked(); n > 16 {
		t.Errorf("tracking %d keys, want at most 16", n)
	}
}

func TestFailureLimiterBegin(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_000_000, 0)
	type step struct {
		at        time.Duration // since t0
		begin     bool          // call Begin, which must answer wantOK and wantRetry
		forgive   int           // else forgive the attempt that step began
		succeed   bool          // else call Succeed
		wantOK    bool
		wantRetry time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"the third attempt is let through and blocks", []step{
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{at: time.Second, begin: true, wantRetry: time.Minute - time.Second},
		}},
		{"attempts count before they end", []step{
			// Three attempts in flight, none finished: a fourth is
			// refused, as if all three had failed.
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{begin: true, wantRetry: time.Minute},
		}},
		{"a forgiven attempt gives its place back", []step{
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{forgive: 2},
			{begin: true, wantOK: true},
			{begin: true, wantRetry: time.Minute},
		}},
		{"forgiving twice gives back one place", []step{
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{forgive: 2},
			{forgive: 2},
			{begin: true, wantOK: true},
			{begin: true, wantRetry: time.Minute},
		}},
		{"forgiving after the window changes nothing", []step{
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{at: time.Minute, begin: true, wantOK: true}, // a new window
			{at: time.Minute, forgive: 0},                // of the old one
			{at: time.Minute, begin: true, wantOK: true},
			{at: time.Minute, begin: true, wantOK: true},
			{at: time.Minute, begin: true, wantRetry: time.Minute},
		}},
		{"forgiving after Succeed changes nothing", []step{
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{succeed: true},
			{begin: true, wantOK: true},
			{forgive: 0},
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{begin: true, wantRetry: time.Minute},
		}},
		{"a refused attempt counts nothing", []step{
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{begin: true, wantOK: true},
			{at: 30 * time.Second, begin: true, wantRetry: 30 * time.Second},
			{at: 30 * time.Second, begin: true, wantRetry: 30 * time.Second},
			{at: time.Minute, begin: true, wantOK: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := NewFailureLimiter(3, time.Minute)
			attempts := make([]Attempt, len(tt.steps))
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				switch {
				case s.begin:
					var ok bool
					var retry time.Duration
					attempts[i], ok, retry = l.Begin("10.0.0.1", now)
					if ok != s.wantOK || retry != s.wantRetry {
						t.Fatalf("step %d: Begin = %v, %v; want %v, %v", i, ok, retry, s.wantOK, s.wantRetry)
					}
				case s.succeed:
					l.Succeed("10.0.0.1")
				default:
					attempts[s.forgive].Forgive()
				}
				if ok, _ := l.Allow("10.0.0.2", now); !ok {
					t.Fatalf("step %d: another key is blocked", i)
				}
			}
		})
	}
}

// TestFailureLimiterBeginConcurrent starts many attempts at once, as
// concurrent logins do: exactly the limit get through, however they
// interleave, and forgiven attempts give back exactly their places.
func TestFailureLimiterBeginConcurrent(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	tests := []struct {
		name          string
		limit         int
		keys          int // attempts spread over this many keys
		attempts      int // per key, all at once
		forgiveEveryN int // 0: none; else every Nth admitted attempt is forgiven at once
	}{
		{"500 at once from one address", 10, 1, 500, 0},
		{"200 addresses at once, each its own limit", 10, 200, 20, 0},
		{"30 per user, 400 at once", 30, 1, 400, 0},
		{"successes among them", 10, 1, 500, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := NewFailureLimiter(tt.limit, time.Minute)
			var (
				wg                sync.WaitGroup
				mu                sync.Mutex
				admitted, forgave = map[string]int{}, map[string]int{}
				start             = make(chan struct{})
			)
			for k := range tt.keys {
				key := "k" + strconv.Itoa(k)
				for range tt.attempts {
					wg.Go(func() {
						<-start
						a, ok, _ := l.Begin(key, now)
						if !ok {
							return
						}
						mu.Lock()
						admitted[key]++
						forgive := tt.forgiveEveryN > 0 && admitted[key]%tt.forgiveEveryN == 0
						if forgive {
							forgave[key]++
						}
						mu.Unlock()
						if forgive {
							a.Forgive()
						}
					})
				}
			}
			close(start)
			wg.Wait()
			for k := range tt.keys {
				key := "k" + strconv.Itoa(k)
				held := admitted[key] - forgave[key]
				if tt.forgiveEveryN == 0 && admitted[key] != tt.limit {
					t.Errorf("%s: %d of %d attempts at once let through, want exactly %d", key, admitted[key], tt.attempts, tt.limit)
				}
				if held > tt.limit {
					t.Errorf("%s: %d attempts let through and not forgiven, want at most %d", key, held, tt.limit)
				}
				// The places left are exactly those not held.
				more := 0
				for more <= tt.limit {
					if _, ok, _ := l.Begin(key, now); !ok {
						break
					}
					more++
				}
				if held+more != tt.limit {
					t.Errorf("%s: %d attempts held and %d more let through afterwards, want %d in all", key, held, more, tt.limit)
				}
			}
		})
	}
}
