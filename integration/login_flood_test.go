package integration

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
)

// Floods of logins against the real server: guesses that arrive at once
// must be counted as they arrive, the password checks of a flood must
// leave the sessions already running their CPU, and refusals must not
// fill the log.

// guessConn is one attacker's kept-alive HTTPS connection to the server,
// from a loopback address of its own, on which it sends tunnel logins.
type guessConn struct {
	addr   string
	dialer net.Dialer
	c      *tls.Conn
	br     *bufio.Reader
}

func newGuessConn(addr string, from net.IP) *guessConn {
	return &guessConn{addr: addr, dialer: net.Dialer{Timeout: harness.IOTimeout, LocalAddr: &net.TCPAddr{IP: from}}}
}

// connect opens the connection if it is not open.
func (g *guessConn) connect() error {
	if g.c != nil {
		return nil
	}
	c, err := tls.DialWithDialer(&g.dialer, "tcp", g.addr, attackTLS)
	if err != nil {
		return err
	}
	g.c, g.br = c, bufio.NewReader(c)
	return nil
}

func (g *guessConn) close() {
	if g.c != nil {
		g.c.Close()
		g.c = nil
	}
}

// login sends a WebSocket upgrade to the tunnel endpoint as user with
// pass, and returns the status and Retry-After of the answer. A
// connection the server closed is dialed again, once.
func (g *guessConn) login(user, pass string) (status int, retry time.Duration, err error) {
	for try := 0; ; try++ {
		reused := g.c != nil
		if status, retry, err = g.loginOnce(user, pass); err == nil || !reused || try > 0 {
			return status, retry, err
		}
	}
}

func (g *guessConn) loginOnce(user, pass string) (int, time.Duration, error) {
	if err := g.connect(); err != nil {
		return 0, 0, err
	}
	g.c.SetDeadline(time.Now().Add(harness.IOTimeout))
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	req := "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: burrow.v1\r\n" +
		"Authorization: Basic " + auth + "\r\n\r\n"
	if _, err := io.WriteString(g.c, req); err != nil {
		g.close()
		return 0, 0, err
	}
	resp, err := http.ReadResponse(g.br, nil)
	if err != nil {
		g.close()
		return 0, 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close || resp.StatusCode == http.StatusSwitchingProtocols {
		g.close()
	}
	secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return resp.StatusCode, time.Duration(secs) * time.Second, nil
}

// guessStatuses counts the final answers to guesses, by status.
type guessStatuses struct {
	mu     sync.Mutex
	counts map[int]int
	errs   []string
}

func (s *guessStatuses) add(status int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counts == nil {
		s.counts = map[int]int{}
	}
	if err != nil {
		if len(s.errs) < 10 {
			s.errs = append(s.errs, err.Error())
		}
		return
	}
	s.counts[status]++
}

// guessUntilAnswered sends one guess on g, and again while the server
// answers that it is busy (503), after the Retry-After it asks for (at
// most a second), as a client does. It records the final answer.
func guessUntilAnswered(g *guessConn, user string, deadline time.Time, into *guessStatuses) {
	defer g.close()
	for {
		status, retry, err := g.login(user, "guess")
		if err != nil || status != http.StatusServiceUnavailable {
			into.add(status, err)
			return
		}
		if time.Now().After(deadline) {
			into.add(0, fmt.Errorf("guess as %s: still answered 503 at the test's deadline", user))
			return
		}
		time.Sleep(min(max(retry, 100*time.Millisecond), time.Second))
	}
}

// guessAtOnce opens one connection per guess from the addresses from,
// each guess as user(i), then sends every guess at the same moment, and
// returns the final answers.
func guessAtOnce(t *testing.T, srv *harness.Server, from []net.IP, user func(i int) string) *guessStatuses {
	t.Helper()
	conns := make([]*guessConn, len(from))
	for i, ip := range from {
		conns[i] = newGuessConn(srv.Addr, ip)
		if err := conns[i].connect(); err != nil {
			t.Fatalf("connection %d from %v: %v", i, ip, err)
		}
		defer conns[i].close()
	}
	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		answers  = &guessStatuses{}
		deadline = time.Now().Add(time.Minute)
	)
	for i, g := range conns {
		wg.Go(func() {
			<-start
			guessUntilAnswered(g, user(i), deadline, answers)
		})
	}
	close(start)
	wg.Wait()
	for _, e := range answers.errs {
		t.Errorf("a guess failed: %s", e)
	}
	return answers
}

// TestLoginLimitCountsAtStart sends guesses at once, as many as there are
// connections, in the two shapes of guessing: 500 from one address, each
// at another user name, against its limit of 10 failures a minute; and
// 400 from 200 addresses, all at one user, against that user's limit of
// 30. Exactly the limit must be let through to a password check (answered
// 401), the rest answered 429; a guess answered 503, because the
// server's password checks are busy, is tried again as a client would.
func TestLoginLimitCountsAtStart(t *testing.T) {
	raiseFileLimit(t, 4096)
	tests := []struct {
		name    string
		from    func(i int) net.IP
		guesses int
		user    func(i int) string
		limit   int
	}{
		{"500 from one address", func(int) net.IP { return net.IPv4(127, 0, 5, 1) }, 500,
			func(i int) string { return fmt.Sprintf("guess%d", i) }, 10},
		{"200 addresses against one user", func(i int) net.IP { return net.IPv4(127, 0, 6, byte(1+i%200)) }, 400,
			func(int) string { return harness.TestUser }, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, admin := startAdminServer(t)
			from := make([]net.IP, tt.guesses)
			for i := range from {
				from[i] = tt.from(i)
			}
			start := time.Now()
			answers := guessAtOnce(t, srv, from, tt.user)
			checked := mustMetrics(t, admin)[`burrow_auth_failures_total{reason="credentials"}`]
			t.Logf("%d guesses at once answered %v in %v; the server counts %.0f failed password checks",
				tt.guesses, answers.counts, time.Since(start).Round(time.Millisecond), checked)
			if got := answers.counts[http.StatusUnauthorized]; got != tt.limit {
				t.Errorf("%d guesses were let through to a password check (401), want exactly %d", got, tt.limit)
			}
			if got := answers.counts[http.StatusTooManyRequests]; got != tt.guesses-tt.limit {
				t.Errorf("%d guesses were answered 429, want the other %d", got, tt.guesses-tt.limit)
			}
			if checked != float64(tt.limit) {
				t.Errorf("the server checked %.0f wrong passwords, want %d", checked, tt.limit)
			}
		})
	}
}

// guessFlood is attackers, each from a loopback address of its own, each
// guessing one login at a time at a new user name: within its address's
// allowance of 10 failures a minute, it takes every password check the
// server lets it have. A 503 is tried again after 200 ms, sooner than the
// server asks; a 429 after a second. The flood can be paused, so that a
// test can measure with and without it in turns.
type guessFlood struct {
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	paused   atomic.Bool
	inFlight atomic.Int64
	statuses [600]atomic.Int64 // answers by status
	errors   atomic.Int64
}

func startGuessFlood(srvAddr string, attackers int) *guessFlood {
	f := &guessFlood{stop: make(chan struct{})}
	f.paused.Store(true)
	for a := range attackers {
		g := newGuessConn(srvAddr, net.IPv4(127, 0, 7, byte(1+a)))
		f.wg.Go(func() {
			defer g.close()
			for i := 0; i < 5000; { // bounded, though stop comes first
				pause := 50 * time.Millisecond
				if !f.paused.Load() {
					i++
					f.inFlight.Add(1)
					status, _, err := g.login(fmt.Sprintf("flood%d-%d", a, i), "guess")
					f.inFlight.Add(-1)
					switch {
					case err != nil:
						f.errors.Add(1)
						pause = 100 * time.Millisecond
					case status == http.StatusServiceUnavailable:
						pause = 200 * time.Millisecond
					case status == http.StatusTooManyRequests:
						pause = time.Second
					default:
						pause = 0
					}
					if err == nil && status < len(f.statuses) {
						f.statuses[status].Add(1)
					}
				}
				select {
				case <-f.stop:
					return
				case <-time.After(pause):
				}
			}
		})
	}
	return f
}

// pause stops the attackers' new guesses and waits for those in flight,
// so that the server checks no more passwords.
func (f *guessFlood) pause(t *testing.T) {
	t.Helper()
	f.paused.Store(true)
	pollUntil(t, harness.IOTimeout, "the flood's guesses all answered", func() bool { return f.inFlight.Load() == 0 })
}

// end stops the attackers and waits for them. It is safe to call twice.
func (f *guessFlood) end() {
	f.stopOnce.Do(func() { close(f.stop) })
	f.wg.Wait()
}

func (f *guessFlood) String() string {
	var parts []string
	for status := range f.statuses {
		if n := f.statuses[status].Load(); n > 0 {
			parts = append(parts, fmt.Sprintf("%d: %d", status, n))
		}
	}
	return fmt.Sprintf("answers {%s}, %d errors", strings.Join(parts, ", "), f.errors.Load())
}

// guessService is what an authenticated user gets, a few tries of each: a
// forwarded echo transfer's throughput, a small message's round trip on an
// open forward, and a new login whose password was checked before.
type guessService struct {
	mibps       []float64
	rtts, login []time.Duration
}

func (g *guessService) add(o guessService) {
	g.mibps = append(g.mibps, o.mibps...)
	g.rtts = append(g.rtts, o.rtts...)
	g.login = append(g.login, o.login...)
}

// medians returns the median of each measure.
func (g guessService) medians() (mibps float64, rtt, login time.Duration) {
	rates := slices.Clone(g.mibps)
	slices.Sort(rates)
	return rates[len(rates)/2], median(g.rtts), median(g.login)
}

func (g guessService) String() string {
	mibps, rtt, login := g.medians()
	return fmt.Sprintf("echo %.1f MiB/s, round trip %v (p50 of %d), login %v", mibps, rtt, len(g.rtts), login)
}

func measureGuessService(t *testing.T, good goodClient) guessService {
	t.Helper()
	const size = 32 << 20
	var g guessService
	for i := range 5 {
		r := pumpEcho(good.local, uint64(600+i), size, time.Minute)
		if r.err != nil {
			t.Fatalf("echo of %d bytes: %v (%d intact)", size, r.err, r.echoed)
		}
		g.mibps = append(g.mibps, float64(size)/(1<<20)/r.elapsed.Seconds())
	}
	conn, err := net.DialTimeout("tcp", good.local, harness.IOTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg, back := make([]byte, 64), make([]byte, 64)
	for range 400 {
		start := time.Now()
		conn.SetDeadline(start.Add(harness.IOTimeout))
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conn, back); err != nil {
			t.Fatal(err)
		}
		g.rtts = append(g.rtts, time.Since(start))
	}
	for range 5 {
		start := time.Now()
		s, err := good.login.dial()
		if err != nil {
			t.Fatalf("good login: %v", err)
		}
		g.login = append(g.login, time.Since(start))
		s.Close()
	}
	return g
}

// TestLoginFloodKeepsService floods the server with wrong-password logins
// from 100 addresses, each within its allowance (see guessFlood), while an
// authenticated user's client forwards to an echo target. The user's
// round trip (p50) must stay within twice, and its throughput above 70%,
// of what it is without the flood. Both are measured in turns, three times
// each, so that the machine's other load falls on both alike; each turn
// with the flood starts once the server is checking the flood's
// passwords (as fast as it lets itself, refusing the rest with 503). Not
// parallel: it measures.
func TestLoginFloodKeepsService(t *testing.T) {
	const (
		attackers    = 100
		rounds       = 3
		maxRTT       = 2.0 // times without the flood
		minMiBps     = 0.7 // of without the flood
		maxLoginSlow = 3.0 // times without the flood, for a login whose password was checked before
	)
	raiseFileLimit(t, 4096)
	echo := harness.StartEcho(t)
	srv, admin := startAdminServer(t)
	good := startGoodClient(t, srv, echo)
	flood := startGuessFlood(srv.Addr, attackers)
	defer flood.end()
	measureGuessService(t, good) // warm up

	metric := func(reason string) float64 {
		return mustMetrics(t, admin)[`burrow_auth_failures_total{reason="`+reason+`"}`]
	}
	var idle, flooded guessService
	var checks, floodTime float64
	for round := range rounds {
		flood.pause(t)
		g := measureGuessService(t, good)
		t.Logf("round %d without the flood: %v", round+1, g)
		idle.add(g)

		flood.paused.Store(false)
		checked0, busy0 := metric("credentials"), metric("busy")
		// A server that let the flood check every password it was
		// allowed to is at the end of what the flood can do.
		deadline := time.Now().Add(harness.IOTimeout)
		for metric("credentials") < checked0+2 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if metric("credentials") < checked0+2 {
			t.Errorf("round %d: the flood's passwords were not being checked within %v; flood %v", round+1, harness.IOTimeout, flood)
			break
		}
		t.Logf("round %d: the flood's first passwords checked, and %.0f logins refused busy", round+1, metric("busy")-busy0)
		checked1, busy1, start := metric("credentials"), metric("busy"), time.Now()
		g = measureGuessService(t, good)
		took, checked2, busy2 := time.Since(start), metric("credentials"), metric("busy")
		t.Logf("round %d with the flood: %v; meanwhile the server checked %.0f wrong passwords and refused %.0f logins busy in %v",
			round+1, g, checked2-checked1, busy2-busy1, took.Round(time.Millisecond))
		flooded.add(g)
		checks += checked2 - checked1
		floodTime += took.Seconds()
		// The flood was on throughout: the server was checking its
		// passwords (and turning away the rest, 503).
		if checked2 == checked1 {
			t.Errorf("round %d: the server checked none of the flood's passwords while measuring: the flood was not on", round+1)
		}
	}
	flood.end()
	t.Logf("flood %v; %.1f wrong passwords checked a second while measuring", flood, checks/floodTime)

	if len(flooded.rtts) == 0 {
		t.FailNow()
	}
	idleMiBps, idleRTT, idleLogin := idle.medians()
	mibps, rtt, login := flooded.medians()
	t.Logf("without the flood: %v", idle)
	t.Logf("with the flood: %v", flooded)
	t.Logf("with the flood against without: throughput %.0f%%, round trip %.2fx, login %.2fx",
		100*mibps/idleMiBps, float64(rtt)/float64(idleRTT), float64(login)/float64(idleLogin))
	if mibps < minMiBps*idleMiBps {
		t.Errorf("throughput during the flood %.1f MiB/s, below %.0f%% of the %.1f MiB/s without it", mibps, 100*minMiBps, idleMiBps)
	}
	if float64(rtt) > maxRTT*float64(idleRTT) {
		t.Errorf("round trip during the flood %v, more than %.0f times the %v without it", rtt, maxRTT, idleRTT)
	}
	if float64(login) > maxLoginSlow*float64(idleLogin) {
		t.Errorf("a login whose password was checked before took %v during the flood, more than %.0f times the %v without it",
			login, maxLoginSlow, idleLogin)
	}
}

var refusalSummaryLine = regexp.MustCompile(`msg="(\d+) logins refused from (\d+) sources? in the last \d+s"`)

// TestLoginFloodLogVolume sends 6,000 failed logins a second for 20 s
// from one address, over kept-alive connections: after its first 10
// failures every one is answered 429 (or 503 while those 10 are checked).
// The server's log of it all, including the summary of the last interval,
// must stay under 200 KB, and its summaries must account for every
// refusal.
func TestLoginFloodLogVolume(t *testing.T) {
	const (
		rate     = 6000
		duration = 20 * time.Second
		total    = int(rate * duration / time.Second)
		workers  = 16
		maxLog   = 200 << 10
	)
	srv := burrow.StartTestServer(t, nil)
	logBefore := len(srv.Stderr.String())
	from := net.IPv4(127, 0, 8, 1)
	var (
		wg      sync.WaitGroup
		answers = &guessStatuses{}
		sent    atomic.Int64
		start   = time.Now()
	)
	for w := range workers {
		g := newGuessConn(srv.Addr, from)
		wg.Go(func() {
			defer g.close()
			// Each worker paces its share of the requests over the
			// duration, and stops at the duration's end plus a margin
			// however many it got through.
			share, interval := total/workers, time.Second*workers/rate
			for i := range share {
				if next := start.Add(time.Duration(i) * interval); time.Until(next) > 0 {
					time.Sleep(time.Until(next))
				}
				if time.Since(start) > duration+5*time.Second {
					return
				}
				status, _, err := g.login(fmt.Sprintf("flood%d", w), "guess")
				answers.add(status, err)
				sent.Add(1)
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, e := range answers.errs {
		t.Errorf("a login failed: %s", e)
	}
	// While the first 10 are checked, the others are answered 429 or,
	// for lack of a password check, 503.
	refused := answers.counts[http.StatusUnauthorized] + answers.counts[http.StatusTooManyRequests] + answers.counts[http.StatusServiceUnavailable]
	t.Logf("%d logins in %v (%.0f a second), answered %v", sent.Load(), elapsed.Round(time.Millisecond),
		float64(sent.Load())/elapsed.Seconds(), answers.counts)
	if answers.counts[http.StatusUnauthorized] != 10 || refused != int(sent.Load()) {
		t.Errorf("failed logins answered %v, want 10 401s and otherwise only 429s and 503s", answers.counts)
	}
	if sent.Load() < int64(total)/2 {
		t.Errorf("only %d of %d logins sent in %v: the flood was too slow to test the log", sent.Load(), total, elapsed.Round(time.Millisecond))
	}

	// The last interval's summary comes at its end, at most 10 s later.
	// Only an interval whose refusals were all logged one by one, at
	// most 10 of each of its three kinds (401, 429, 503), has none.
	const unsummarised = 3 * 10
	summarised := func() int {
		n := 0
		for _, m := range refusalSummaryLine.FindAllStringSubmatch(srv.Stderr.String()[logBefore:], -1) {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
		return n
	}
	deadline := time.Now().Add(15 * time.Second)
	for summarised() < refused-unsummarised && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	log := srv.Stderr.String()[logBefore:]
	summaries := refusalSummaryLine.FindAllString(log, -1)
	t.Logf("the server logged %d bytes, %d lines, for the flood, with %d summaries:\n%s", len(log), strings.Count(log, "\n"),
		len(summaries), strings.Join(summaries, "\n"))
	if len(log) >= maxLog {
		t.Errorf("the server logged %d bytes for %d refused logins, want under %d", len(log), refused, maxLog)
	}
	if n := summarised(); n > refused || n < refused-unsummarised {
		t.Errorf("the summaries count %d refused logins, want %d (or up to %d fewer, logged one by one)", n, refused, unsummarised)
	}
}
