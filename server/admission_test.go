package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
	"golang.org/x/crypto/bcrypt"
)

func TestVerifyGateBoundsConcurrency(t *testing.T) {
	t.Parallel()
	tests := []struct {
		slots, queue, logins int
	}{
		{1, 7, 8},
		{2, 10, 12},
		{4, 4, 8},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.slots)+" slots", func(t *testing.T) {
			t.Parallel()
			g := newVerifyGate(tt.slots, tt.queue)
			var running, peak, done atomic.Int32
			var wg sync.WaitGroup
			for range tt.logins {
				wg.Go(func() {
					release, _ := g.acquire(context.Background())
					if release == nil {
						return
					}
					n := running.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					time.Sleep(time.Millisecond)
					running.Add(-1)
					done.Add(1)
					release()
				})
			}
			wg.Wait()
			if p := int(peak.Load()); p != tt.slots {
				t.Errorf("%d verifications ran at once, want %d", p, tt.slots)
			}
			// Slots plus queue hold them all: none is refused.
			if n := int(done.Load()); n != tt.logins {
				t.Errorf("%d of %d logins verified, want all", n, tt.logins)
			}
		})
	}
}

// holdSlots takes every slot of g and returns the function that gives them back.
func holdSlots(t *testing.T, g *verifyGate) func() {
	t.Helper()
	var releases []func()
	for range cap(g.slots) {
		release, _ := g.acquire(context.Background())
		if release == nil {
			t.Fatal("a free slot was refused")
		}
		releases = append(releases, release)
	}
	return func() {
		for _, r := range releases {
			r()
		}
	}
}

// waitWaiting waits until n logins wait at g.
func waitWaiting(t *testing.T, g *verifyGate, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for g.waiting.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d logins waiting, want %d", g.waiting.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestVerifyGateRefusesBeyondQueueAtOnce(t *testing.T) {
	t.Parallel()
	g := newVerifyGate(1, 2)
	releaseAll := holdSlots(t, g)
	got := make(chan bool, 2)
	for range 2 {
		go func() {
			release, _ := g.acquire(context.Background())
			got <- release != nil
			if release != nil {
				release()
			}
		}()
	}
	waitWaiting(t, g, 2)
	start := time.Now()
	release, retry := g.acquire(context.Background())
	if release != nil {
		t.Fatal("a login beyond the queue was given a slot")
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("a login beyond the queue was refused after %v, want at once", took)
	}
	if retry < time.Second {
		t.Errorf("Retry-After %v, want at least a second", retry)
	}
	releaseAll()
	for range 2 {
		if !<-got {
			t.Error("a queued login was refused")
		}
	}
}

func TestVerifyGateFirstComeFirstServed(t *testing.T) {
	t.Parallel()
	g := newVerifyGate(1, 10)
	releaseAll := holdSlots(t, g)
	order := make(chan int, 5)
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			release, _ := g.acquire(context.Background())
			order <- i
			release()
		})
		waitWaiting(t, g, int64(i+1)) // in this order
	}
	releaseAll()
	wg.Wait()
	close(order)
	want := 0
	for i := range order {
		if i != want {
			t.Fatalf("login %d verified as number %d", i, want)
		}
		want++
	}
}

func TestVerifyGateRestsSlots(t *testing.T) {
	t.Parallel()
	const cost = 20 * time.Millisecond
	g := newVerifyGate(1, 10)
	release, _ := g.acquire(context.Background())
	time.Sleep(cost)
	release()
	ended := time.Now()
	release, _ = g.acquire(context.Background())
	defer release()
	// The slot rests verifyRest times the verification's cost.
	if rested := time.Since(ended); rested < verifyRest*cost {
		t.Errorf("the next verification started %v after one of %v, want at least %v", rested, cost, verifyRest*cost)
	}
	if retry := g.retryAfter(); retry < time.Second {
		t.Errorf("Retry-After %v, want at least a second", retry)
	}
}

// TestVerifyGateDutyCycle floods one slot for a while: verifications
// take at most a quarter of its time, as their rests say.
func TestVerifyGateDutyCycle(t *testing.T) {
	t.Parallel()
	const (
		cost   = 5 * time.Millisecond
		during = 400 * time.Millisecond
	)
	g := newVerifyGate(1, 100)
	var busy atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for time.Since(start) < during {
				release, _ := g.acquire(context.Background())
				if release == nil {
					continue
				}
				began := time.Now()
				time.Sleep(cost)
				busy.Add(int64(time.Since(began)))
				release()
			}
		})
	}
	wg.Wait()
	share := float64(busy.Load()) / float64(time.Since(start))
	t.Logf("verifying %.0f%% of the time", 100*share)
	if limit := 1.0/(1+verifyRest) + 0.05; share > limit {
		t.Errorf("verifying %.0f%% of the time, want at most %.0f%%", 100*share, 100*limit)
	}
}

func TestVerifyGateGivesUpWithContext(t *testing.T) {
	t.Parallel()
	g := newVerifyGate(1, 10)
	releaseAll := holdSlots(t, g)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan func(), 1)
	go func() {
		release, _ := g.acquire(ctx)
		got <- release
	}()
	waitWaiting(t, g, 1)
	cancel()
	if release := <-got; release != nil {
		t.Fatal("a login whose request ended was given a slot")
	}
	if n := g.waiting.Load(); n != 0 {
		t.Errorf("%d logins counted waiting after the only one gave up", n)
	}
	releaseAll()
	releaseAll() // twice: gives nothing back twice
	if n := len(g.slots); n != 1 {
		t.Errorf("%d free slots, want 1", n)
	}
}

// gateFixture is a Server over TLS whose users' password checks block
// until the test lets them go, so that logins can be held in the middle.
type gateFixture struct {
	srv      *Server
	hs       *httptest.Server
	verified atomic.Int32  // password hashes computed
	unblock  chan struct{} // closed to let wrong-password checks finish
}

func newGateFixture(t *testing.T, cfg Config) *gateFixture {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("alice-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(map[string]any{"users": map[string]any{"alice": map[string]any{"password": string(hash), "allow": []string{".*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	us, err := ParseUsers(data)
	if err != nil {
		t.Fatal(err)
	}
	f := &gateFixture{unblock: make(chan struct{})}
	verify := us.verify
	us.verify = func(encoded, password string) (bool, error) {
		f.verified.Add(1)
		if password != "alice-secret" {
			<-f.unblock
		}
		return verify(encoded, password)
	}
	cfg.Auth = us
	cfg.Logger = slog.New(slog.DiscardHandler)
	if f.srv, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	f.hs = httptest.NewTLSServer(f.srv)
	t.Cleanup(func() {
		select {
		case <-f.unblock:
		default:
			close(f.unblock)
		}
		f.srv.Close()
		f.hs.Close()
	})
	return f
}

// login tries a tunnel login and returns the HTTP status it got, 101 for a session.
func (f *gateFixture) login(t *testing.T, user, password string) (int, time.Duration) {
	h := http.Header{}
	(&http.Request{Header: h}).SetBasicAuth(user, password)
	sess, err := mux.Dial(context.Background(), "wss"+strings.TrimPrefix(f.hs.URL, "https")+"/", &mux.DialOptions{HTTPClient: f.hs.Client(), Header: h})
	if err == nil {
		sess.Close()
		return http.StatusSwitchingProtocols, 0
	}
	var he *mux.HandshakeError
	if !errors.As(err, &he) {
		t.Errorf("login as %s: %v, want a session or an HTTP refusal", user, err)
		return 0, 0
	}
	return he.StatusCode, he.RetryAfter
}

// TestLoginWaitsForVerification holds the one verification slot and the
// queue with wrong guesses: another guess is answered 503 with
// Retry-After at once, and does not count against its address, while a
// login whose password was verified before goes through without waiting.
func TestLoginWaitsForVerification(t *testing.T) {
	t.Parallel()
	f := newGateFixture(t, Config{MaxVerifying: 1, VerifyQueue: 1, LoginFailures: 3})
	if code, _ := f.login(t, "alice", "alice-secret"); code != http.StatusSwitchingProtocols {
		t.Fatalf("first good login: HTTP %d", code)
	}
	codes := make(chan int, 2)
	for range 2 {
		go func() {
			code, _ := f.login(t, "alice", "guess")
			codes <- code
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.verified.Load() != 2 || f.srv.verify.waiting.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d verifications started and %d logins waiting, want 2 (with the good login) and 1", f.verified.Load(), f.srv.verify.waiting.Load())
		}
		time.Sleep(time.Millisecond)
	}
	// Both guesses are counted against the address, and this third one
	// too while it is in flight; it gives its place back when refused.
	if code, retry := f.login(t, "alice", "guess"); code != http.StatusServiceUnavailable || retry < time.Second {
		t.Errorf("a guess beyond the verification queue: HTTP %d, Retry-After %v; want 503 and at least a second", code, retry)
	}
	start := time.Now()
	if code, _ := f.login(t, "alice", "alice-secret"); code != http.StatusSwitchingProtocols {
		t.Errorf("a good login, verified before, while guesses hold the verifications: HTTP %d, want a session", code)
	}
	t.Logf("cached login beside the held guesses took %v", time.Since(start))
	close(f.unblock)
	for range 2 {
		if code := <-codes; code != http.StatusUnauthorized {
			t.Errorf("a held guess: HTTP %d, want 401", code)
		}
	}
	// The refused guess cost no place: one more guess is let through
	// before the address's limit of 3.
	if code, _ := f.login(t, "bob", "guess"); code != http.StatusUnauthorized {
		t.Errorf("third guess: HTTP %d, want 401", code)
	}
	if code, _ := f.login(t, "carol", "guess"); code != http.StatusTooManyRequests {
		t.Errorf("fourth guess: HTTP %d, want 429", code)
	}
	if n := f.verified.Load(); n != 4 {
		t.Errorf("%d password hashes computed, want 4: the first good login and three guesses", n)
	}
}

// TestConcurrentGuessesCountedAtStart sends many guesses at once from one
// address, each retried while the server is busy as a client would: exactly
// the address's limit of them have their password checked.
func TestConcurrentGuessesCountedAtStart(t *testing.T) {
	t.Parallel()
	const limit, guesses = 5, 60
	f := newGateFixture(t, Config{LoginFailures: limit})
	close(f.unblock)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := range guesses {
		wg.Go(func() {
			for range 50 {
				code, retry := f.login(t, "user"+strconv.Itoa(i), "guess")
				if code == http.StatusServiceUnavailable {
					time.Sleep(min(retry, 50*time.Millisecond))
					continue
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
				return
			}
			t.Errorf("guess %d: still busy after 50 tries", i)
		})
	}
	wg.Wait()
	if codes[http.StatusUnauthorized] != limit || codes[http.StatusTooManyRequests] != guesses-limit {
		t.Errorf("%d guesses at once answered %v, want %d 401s and the rest 429", guesses, codes, limit)
	}
	if n := f.verified.Load(); n != limit {
		t.Errorf("%d passwords checked, want %d", n, limit)
	}
}
