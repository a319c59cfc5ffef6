package integration

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
	"github.com/burrowtun/burrow/mux"
)

// Hostile peers: thousands of connections that never finish their
// request, that are not TLS, or that try WebSocket frames without
// credentials; floods of failed logins; oversized headers; and an
// authenticated user whose target stops reading. The server must close
// what it cannot use by its deadlines and go on serving real clients at
// normal speed.

// Where the attacks come from: other loopback addresses than the good
// client's 127.0.0.1, since failed logins are limited per source address.
var (
	attackerIP = net.IPv4(127, 0, 0, 2)
	guesserIP  = net.IPv4(127, 0, 0, 3)
)

// defaultHeaderTimeout is the server's default --header-timeout, which bounds the
// TLS handshake and the request headers of every connection.
const defaultHeaderTimeout = 10 * time.Second

// attackTLS is how attackers speak TLS: they do not care who the server is.
var attackTLS = &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", NextProtos: []string{"http/1.1"}}

// attackRun records what the hostile connections saw.
type attackRun struct {
	dialer net.Dialer
	addr   string

	held     atomic.Int64 // connections open now
	opened   atomic.Int64
	lastDial atomic.Int64 // when the last connection was opened, in Unix nanoseconds

	mu       sync.Mutex
	lifetime map[string][]time.Duration // by kind: from the last byte that set the server's deadline to its close
	statuses map[string]int             // first status line seen, by kind and status
	failures []string
	// The first and the last answered guess (failedLogins): the limit
	// of failures per window is let through once per window they span.
	firstGuess, lastGuess time.Time
}

func newAttackRun(addr string, from net.IP) *attackRun {
	return &attackRun{
		dialer:   net.Dialer{Timeout: harness.IOTimeout, LocalAddr: &net.TCPAddr{IP: from}},
		addr:     addr,
		lifetime: map[string][]time.Duration{},
		statuses: map[string]int{},
	}
}

func (a *attackRun) failf(format string, args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.failures) < 20 {
		a.failures = append(a.failures, fmt.Sprintf(format, args...))
	}
}

func (a *attackRun) closedAfter(kind string, d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lifetime[kind] = append(a.lifetime[kind], d)
}

func (a *attackRun) status(kind, s string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.statuses[kind+" "+s]++
}

// dial opens a TCP connection, counted as held until closed.
func (a *attackRun) dial() (net.Conn, error) {
	c, err := a.dialer.Dial("tcp", a.addr)
	if err != nil {
		return nil, err
	}
	a.opened.Add(1)
	a.held.Add(1)
	a.lastDial.Store(time.Now().UnixNano())
	return c, nil
}

// handshake completes TLS on c, dialed at dialed, as an attacker of kind.
// A loaded server may not finish a handshake by its deadline, the header
// timeout, and then closes the connection: that is the server defending
// itself, recorded as a close of kind+" handshake", and handshake returns
// nil. Any other failure is one of the test's.
func (a *attackRun) handshake(kind string, c net.Conn, dialed time.Time) *tls.Conn {
	tc := tls.Client(c, attackTLS)
	tc.SetDeadline(time.Now().Add(harness.IOTimeout))
	err := tc.Handshake()
	switch {
	case err == nil:
		return tc
	case closedByPeer(err):
		a.closedAfter(kind+" handshake", time.Since(dialed))
	default:
		a.failf("%s: TLS handshake: %v", kind, err)
	}
	return nil
}

// closedByPeer reports whether err says the far end closed the connection.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// awaitClose reads c until the server closes it, for at most bound, and
// returns how long that took; ok is false if it was still open.
func awaitClose(c net.Conn, bound time.Duration) (time.Duration, bool) {
	start := time.Now()
	c.SetReadDeadline(start.Add(bound))
	_, err := io.Copy(io.Discard, c)
	return time.Since(start), err == nil || !isTimeout(err)
}

// trickle writes piece(0) on c, then piece(i) every second, until the
// server closes c, and returns how long after start that was; ok is false
// if c was still open after bound. One goroutine per connection, so that
// thousands fit under the race detector's limit.
func trickle(c net.Conn, start time.Time, bound time.Duration, piece func(i int) []byte) (time.Duration, bool) {
	buf := make([]byte, 512)
	c.SetWriteDeadline(time.Now().Add(harness.IOTimeout))
	c.Write(piece(0)) // an error shows in the reads
	for i := 1; ; {
		c.SetReadDeadline(time.Now().Add(time.Second))
		_, err := c.Read(buf)
		switch {
		case err == nil: // an answer; the close follows
		case isTimeout(err):
			if time.Since(start) > bound {
				return time.Since(start), false
			}
			c.SetWriteDeadline(time.Now().Add(harness.IOTimeout))
			c.Write(piece(i))
			i++
		default:
			return time.Since(start), true
		}
	}
}

// slowloris completes TLS, sends the start of a request and then one
// header line a second, until the server closes the connection.
// It calls established once the handshake is over.
func (a *attackRun) slowloris(established func()) {
	dialed := time.Now()
	c, err := a.dial()
	if err != nil {
		established()
		a.failf("slowloris: %v", err)
		return
	}
	defer a.held.Add(-1)
	defer c.Close()
	tc := a.handshake("slowloris", c, dialed)
	established()
	if tc == nil {
		return
	}
	start := time.Now() // the server's header deadline runs from about here
	tc.SetDeadline(time.Time{})
	d, ok := trickle(tc, start, defaultHeaderTimeout+harness.IOTimeout, func(i int) []byte {
		if i == 0 {
			return []byte("GET / HTTP/1.1\r\nHost: localhost\r\n")
		}
		return fmt.Appendf(nil, "X-Slow-%d: %d\r\n", i, i)
	})
	if !ok {
		a.failf("slowloris: still open %v after its request began", d.Round(time.Millisecond))
		return
	}
	a.closedAfter("slowloris", d)
}

// partialTLS sends the start of a TLS record and then a byte a second: the
// handshake never completes. It calls established once connected.
func (a *attackRun) partialTLS(established func()) {
	c, err := a.dial()
	established()
	if err != nil {
		a.failf("partial TLS: %v", err)
		return
	}
	defer a.held.Add(-1)
	defer c.Close()
	start := time.Now() // the server's handshake deadline runs from its accept
	d, ok := trickle(c, start, defaultHeaderTimeout+harness.IOTimeout, func(i int) []byte {
		if i == 0 {
			return []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01} // a 512-byte handshake record: ClientHello...
		}
		return []byte{0}
	})
	if !ok {
		a.failf("partial TLS: still open %v after connecting", d.Round(time.Millisecond))
		return
	}
	a.closedAfter("partial TLS", d)
}

// hold keeps slots connections made by open up until stop: as soon as the
// server closes one, its slot opens another, as a slowloris attacker
// does. The first connections are opened at most 64 at a time, and ready
// is done once each slot has had its first one established.
func (a *attackRun) hold(slots int, open func(established func()), stop <-chan struct{}, wg, ready *sync.WaitGroup) {
	sem := make(chan struct{}, 64)
	for range slots {
		wg.Add(1)
		ready.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			var first sync.Once
			for {
				open(func() { first.Do(func() { <-sem; ready.Done() }) })
				first.Do(func() { <-sem; ready.Done() }) // if open failed early
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	}
}

// garbage sends random bytes that are not TLS.
func (a *attackRun) garbage() {
	c, err := a.dial()
	if err != nil {
		a.failf("garbage: %v", err)
		return
	}
	defer a.held.Add(-1)
	defer c.Close()
	junk := make([]byte, 2048)
	rand.Read(junk)
	junk[0] = 0x47 // not a TLS record type
	start := time.Now()
	c.SetWriteDeadline(start.Add(harness.IOTimeout))
	c.Write(junk)
	if d, ok := awaitClose(c, harness.IOTimeout); ok {
		a.closedAfter("garbage", d)
	} else {
		a.failf("garbage: still open %v after it was sent", harness.IOTimeout)
	}
}

// noCredentials completes TLS and asks for the tunnel's WebSocket without
// credentials, then sends WebSocket frames at once as if it had been let
// in: they can only be read as a second, malformed, HTTP request.
func (a *attackRun) noCredentials() {
	dialed := time.Now()
	c, err := a.dial()
	if err != nil {
		a.failf("no credentials: %v", err)
		return
	}
	defer a.held.Add(-1)
	defer c.Close()
	tc := a.handshake("no credentials", c, dialed)
	if tc == nil {
		return
	}
	var req strings.Builder
	req.WriteString("GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: burrow.v1\r\n\r\n")
	for range 3 {
		// A masked binary frame of 125 bytes: a yamux header and more.
		frame := make([]byte, 2+4+125)
		frame[0], frame[1] = 0x82, 0x80|125
		rand.Read(frame[2:])
		req.Write(frame)
	}
	start := time.Now()
	if _, err := io.WriteString(tc, req.String()); err != nil {
		a.failf("no credentials: write: %v", err)
		return
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		a.failf("no credentials: no HTTP answer: %v", err)
		return
	}
	resp.Body.Close()
	a.status("no credentials", resp.Status)
	if _, ok := awaitClose(tc, harness.IOTimeout); ok {
		a.closedAfter("no credentials", time.Since(start))
	} else {
		a.failf("no credentials: still open %v after its frames", harness.IOTimeout)
	}
}

// failedLogins tries the tunnel with a wrong password for a user that
// does not exist, rate times a second over a kept-alive HTTPS connection,
// until stop or n attempts, and records the statuses.
func failedLogins(a *attackRun, rate, n int, stop <-chan struct{}) {
	hc := &http.Client{Timeout: harness.IOTimeout, Transport: &http.Transport{
		DialContext:     a.dialer.DialContext,
		TLSClientConfig: attackTLS,
	}}
	defer hc.CloseIdleConnections()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for range n {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		req, _ := http.NewRequest(http.MethodGet, "https://"+a.addr+"/", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Protocol", "burrow.v1")
		req.SetBasicAuth("mallory", "guess")
		// A new connection's handshake may be closed by a loaded
		// server at its deadline, before any request is read; the next
		// attempt dials again.
		var shed atomic.Bool
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			TLSHandshakeDone: func(_ tls.ConnectionState, err error) { shed.Store(err != nil && closedByPeer(err)) },
		}))
		start := time.Now()
		resp, err := hc.Do(req)
		if err != nil && shed.Load() && closedByPeer(err) {
			a.closedAfter("login handshake", time.Since(start))
			continue
		}
		if err != nil {
			a.failf("failed login: %v", err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		a.mu.Lock()
		if a.firstGuess.IsZero() {
			a.firstGuess = start
		}
		a.lastGuess = time.Now()
		a.mu.Unlock()
		a.status("login", resp.Status)
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			a.failf("failed login: 429 without Retry-After")
		}
	}
}

// goodClient is a real client's view of one server: a forward to an echo
// target through 'burrow client', and logins in-process.
type goodClient struct {
	proc  *harness.Proc
	local string
	login *sessionDialer
}

// startGoodClient starts a client of srv forwarding to echo.
func startGoodClient(t *testing.T, srv *harness.Server, echo string) goodClient {
	t.Helper()
	p, locals := burrow.StartClient(t, srv.URL, harness.TestUser+":"+harness.TestPass, []string{"--fingerprint", srv.Cert.Fingerprint}, "127.0.0.1:0:"+echo)
	d := newSessionDialer(t, srv, net.IPv4(127, 0, 0, 1), harness.TestUser, harness.TestPass)
	if s, err := d.dial(); err != nil { // the password check is cached from here on
		t.Fatal(err)
	} else {
		s.Close()
	}
	return goodClient{proc: p, local: locals[0], login: d}
}

// goodService is what a real client gets from the attacked server, each
// figure the median of a few tries, and the same as a ratio to what a
// client of a twin server, never attacked, got at the same time: the
// twin shares the machine, so the ratio leaves out what the machine's
// other load, and the attacker's own use of it, do to both.
type goodService struct {
	mibps, mibpsRatio    float64       // a forwarded echo transfer, MiB/s
	rtt, login           time.Duration // a small message echoed on an open forward; a login and session
	rttRatio, loginRatio float64
}

func (g goodService) String() string {
	return fmt.Sprintf("echo %.0f MiB/s (%.2f of the twin's), round trip %v (%.2f), login %v (%.2f)",
		g.mibps, g.mibpsRatio, g.rtt, g.rttRatio, g.login, g.loginRatio)
}

// measureService measures what the good clients of the attacked server and
// of its twin get, at the same time or alternately.
func measureService(t *testing.T, attacked, twin goodClient) goodService {
	t.Helper()
	median := func(f []float64) float64 {
		slices.Sort(f)
		return f[len(f)/2]
	}
	const size = 16 << 20
	var rates, rateRatios []float64
	for i := range 5 {
		var r [2]echoResult
		var wg sync.WaitGroup
		for j, c := range []goodClient{attacked, twin} {
			wg.Go(func() { r[j] = pumpEcho(c.local, uint64(200+10*i+j), size, time.Minute) })
		}
		wg.Wait()
		for _, r := range r {
			if r.err != nil {
				t.Fatalf("echo of %d bytes: %v (%d intact)", size, r.err, r.echoed)
			}
		}
		rates = append(rates, float64(size)/(1<<20)/r[0].elapsed.Seconds())
		rateRatios = append(rateRatios, r[1].elapsed.Seconds()/r[0].elapsed.Seconds())
	}
	var conns [2]net.Conn
	for j, c := range []goodClient{attacked, twin} {
		conn, err := net.DialTimeout("tcp", c.local, harness.IOTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns[j] = conn
	}
	var rtts [2][]float64
	msg, back := make([]byte, 64), make([]byte, 64)
	for range 31 {
		for j, conn := range conns {
			start := time.Now()
			conn.SetDeadline(start.Add(harness.IOTimeout)) // one exchange, not all 31
			if _, err := conn.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(conn, back); err != nil {
				t.Fatal(err)
			}
			rtts[j] = append(rtts[j], time.Since(start).Seconds())
		}
	}
	var logins [2][]float64
	for range 9 {
		for j, c := range []goodClient{attacked, twin} {
			start := time.Now()
			s, err := c.login.dial()
			if err != nil {
				t.Fatalf("good login: %v", err)
			}
			logins[j] = append(logins[j], time.Since(start).Seconds())
			s.Close()
		}
	}
	rtt, login := median(rtts[0]), median(logins[0])
	seconds := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)).Round(time.Microsecond) }
	return goodService{
		mibps: median(rates), mibpsRatio: median(rateRatios),
		rtt: seconds(rtt), rttRatio: rtt / median(rtts[1]),
		login: seconds(login), loginRatio: login / median(logins[1]),
	}
}

// lifetimeSpread describes durations by their least, median and greatest.
func lifetimeSpread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	return fmt.Sprintf("%d, closed after %v..%v..%v", len(s), r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]))
}

// TestHostile keeps 2,000 connections open whose TLS handshake or request
// headers never end, opening a new one whenever the server closes one as
// a slowloris attacker does, then adds floods of garbage, of WebSocket
// requests without credentials followed by WebSocket frames, and of failed
// logins. Meanwhile a real client keeps using a forward and logging in.
// Every hostile connection must be closed by the server's deadlines,
// failed logins must be answered 429, the client must be served about as
// fast as without the attack, and the server must end with the goroutines
// and files it had. Not parallel: it measures.
func TestHostile(t *testing.T) {
	const (
		slow, partial       = 1600, 400 // connections held: request headers, TLS handshakes
		floodRate, floodMax = 100, 400  // connections a second of each flood, and at most
		// The good client's forwarded throughput, as a ratio to the
		// twin's at the same time, against the lesser of that ratio
		// before and after the attack: beside the held connections,
		// which cost the server a goroutine and a socket each and
		// nothing while they trickle; and during the floods, whose TLS
		// handshakes, 401s and 429s (100 of each a second) cost the
		// attacked server CPU that the twin keeps.
		minHeld, minFlood = 0.8, 0.6
		// A good login (its password check cached) may take this many
		// times longer, against the twin, than without the attack.
		maxLoginSlower = 2.0
	)
	raiseFileLimit(t, uint64(2*(slow+partial+3*floodMax)+1024))
	echo := harness.StartEcho(t)
	srv, admin := startAdminServer(t)
	good := startGoodClient(t, srv, echo)
	twin := startGoodClient(t, burrow.StartTestServer(t, nil), echo)

	base := quietFootprint(t, admin, 1)
	before := measureService(t, good, twin)
	t.Logf("without attack: %v; server %v", before, base)

	// The connections that hold on.
	a := newAttackRun(srv.Addr, attackerIP)
	stop := make(chan struct{})
	var wg, ready sync.WaitGroup
	rampStart := time.Now()
	a.hold(slow, a.slowloris, stop, &wg, &ready)
	a.hold(partial, a.partialTLS, stop, &wg, &ready)
	ready.Wait()
	m := mustMetrics(t, admin)
	held, serverFDs := a.held.Load(), m["process_open_fds"]
	t.Logf("%d connections held open after %v; the server has %.0f open fds, %.0f goroutines",
		held, time.Since(rampStart).Round(time.Millisecond), serverFDs, m["go_goroutines"])
	// The attack is on the server, not only in this process.
	if serverFDs < base.fds+0.9*(slow+partial) {
		t.Fatalf("the server has %.0f open fds beside %d held connections, %.0f before: the attack is not reaching it", serverFDs, held, base.fds)
	}
	holding := measureService(t, good, twin)
	t.Logf("beside %d held connections: %v", a.held.Load(), holding)

	// The floods, each floodRate connections a second, while the good
	// client is measured again.
	flood := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second / floodRate)
			defer tick.Stop()
			for range floodMax {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					f()
				}()
			}
		}()
	}
	flood(a.garbage)
	flood(a.noCredentials)
	guesser := newAttackRun(srv.Addr, guesserIP)
	wg.Add(1)
	go func() {
		defer wg.Done()
		failedLogins(guesser, floodRate, floodMax, stop)
	}()
	// Measured once the guesser is limited: its first ten failures cost
	// the server a password hash each, which is what the limit bounds.
	floodStart := time.Now()
	pollUntil(t, harness.IOTimeout, "failed logins limited", func() bool {
		guesser.mu.Lock()
		defer guesser.mu.Unlock()
		return guesser.statuses["login 429 Too Many Requests"] > 0 || len(guesser.failures) > 0
	})
	t.Logf("failed logins answered 429 after %v", time.Since(floodStart).Round(time.Millisecond))
	heldNow := a.held.Load()
	flooding := measureService(t, good, twin)
	m = mustMetrics(t, admin)
	t.Logf("beside %d held connections and the floods: %v; server had %.0f open fds, %.0f goroutines", heldNow, flooding, m["process_open_fds"], m["go_goroutines"])

	// Every connection is closed by the server, at the latest by its
	// header deadline: the server is back to its baseline at most that
	// long after the last one was opened. Timed by the server's own
	// count, since this process's view is late by however long its
	// goroutines wait for the CPU.
	close(stop)
	lastOpened := time.Unix(0, a.lastDial.Load())
	closedAll := awaitBaseline(t, admin, base, 10, 5, defaultHeaderTimeout+harness.IOTimeout)
	t.Logf("the server closed the last hostile connection %v after it was opened", closedAll.Sub(lastOpened).Round(time.Millisecond))
	if d := closedAll.Sub(lastOpened); d > defaultHeaderTimeout+2*time.Second {
		t.Errorf("the server still had hostile connections %v after the last was opened, want at most --header-timeout (%v) and 2 s",
			d.Round(time.Millisecond), defaultHeaderTimeout)
	}
	wg.Wait()
	t.Logf("all %d hostile connections closed %v after the first", a.opened.Load(), time.Since(rampStart).Round(time.Millisecond))
	for _, f := range append(a.failures, guesser.failures...) {
		t.Error(f)
	}
	for _, kind := range []string{"slowloris", "partial TLS", "garbage", "no credentials"} {
		t.Logf("%s: %s", kind, lifetimeSpread(a.lifetime[kind]))
		if len(a.lifetime[kind]) == 0 {
			t.Errorf("no %s connection was closed by the server", kind)
		}
	}
	// A handshake the server closed is one it could not finish by its
	// deadline, which runs from its accept: never sooner.
	for _, k := range []struct {
		kind string
		run  *attackRun
	}{{"slowloris handshake", a}, {"no credentials handshake", a}, {"login handshake", guesser}} {
		kind, shed := k.kind, k.run.lifetime[k.kind]
		t.Logf("%s closed by the server before it was done: %s", kind, lifetimeSpread(shed))
		if len(shed) > 0 && slices.Min(shed) < defaultHeaderTimeout {
			t.Errorf("the server closed a %s %v after it was dialed, before its header timeout (%v)",
				kind, slices.Min(shed).Round(time.Millisecond), defaultHeaderTimeout)
		}
	}
	// Garbage is refused at once, not at a deadline: most such
	// connections are gone well within a second, even as this process
	// sees it.
	if g := a.lifetime["garbage"]; len(g) > 0 && median(g) > time.Second {
		t.Errorf("connections sending garbage lasted %v (median), want them closed at once", median(g))
	}
	t.Logf("first answers to WebSocket requests without credentials: %v; to failed logins: %v", a.statuses, guesser.statuses)
	for s, n := range a.statuses {
		if s != "no credentials 401 Unauthorized" && s != "no credentials 429 Too Many Requests" {
			t.Errorf("%d WebSocket requests without credentials answered %q, want 401 or 429", n, s)
		}
	}
	if a.statuses["no credentials 429 Too Many Requests"] == 0 {
		t.Errorf("repeated requests without credentials from one address were never answered 429")
	}
	// One at a time: exactly the limit of 10 failures a minute is let
	// through to the password check, once in each minute the guesses
	// spanned (a loaded machine makes the flood last longer).
	windows := 1 + int(guesser.lastGuess.Sub(guesser.firstGuess)/time.Minute)
	if unauthorized, limited := guesser.statuses["login 401 Unauthorized"], guesser.statuses["login 429 Too Many Requests"]; unauthorized < 10 || unauthorized > 10*windows || limited == 0 ||
		limited+unauthorized != statusTotal(guesser.statuses) {
		t.Errorf("failed logins answered %v over %d minute windows, want 10 401s in each, then only 429s", guesser.statuses, windows)
	}

	// The good client was served throughout, about as well as the twin's.
	after := measureService(t, good, twin)
	t.Logf("after the attack: %v", after)
	if n := good.proc.CountLog(connectionLostLine); n != 0 {
		t.Errorf("the good client lost its session %d times during the attack", n)
	}
	ref := min(before.mibpsRatio, after.mibpsRatio)
	refLogin := max(before.loginRatio, after.loginRatio)
	for _, under := range []struct {
		what string
		g    goodService
		min  float64
	}{{"beside the held connections", holding, minHeld}, {"beside the floods", flooding, minFlood}} {
		t.Logf("%s: throughput %.0f%% of without attack (against the twin), round trip %.1fx, login %.1fx", under.what,
			100*under.g.mibpsRatio/ref, under.g.rttRatio/before.rttRatio, under.g.loginRatio/refLogin)
		if under.g.mibpsRatio < under.min*ref {
			t.Errorf("forwarded throughput %s was %.2f of the twin's, below %.0f%% of the %.2f without attack", under.what, under.g.mibpsRatio, 100*under.min, ref)
		}
		if under.g.loginRatio > maxLoginSlower*refLogin {
			t.Errorf("a good login %s took %.2f times the twin's, more than %.0f times the %.2f without attack", under.what, under.g.loginRatio, maxLoginSlower, refLogin)
		}
	}
}

// median is the middle of ds.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// pollUntil polls cond until it holds, failing the test after timeout.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func statusTotal(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestOversizedHeaders sends requests whose headers exceed the server's
// 16 KiB limit (plus the 4 KiB net/http tolerates beyond it): they get 431;
// smaller ones are answered as usual (a 404 for a GET of /).
func TestOversizedHeaders(t *testing.T) {
	t.Parallel()
	srv := burrow.StartTestServer(t, nil)
	tests := []struct {
		name   string
		header int // bytes of one header's value
		status string
	}{
		{"12 KiB", 12 << 10, "404"},
		{"24 KiB", 24 << 10, "431"},
		{"1 MiB", 1 << 20, "431"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := tls.DialWithDialer(&net.Dialer{Timeout: harness.IOTimeout}, "tcp", srv.Addr, attackTLS)
			if err != nil {
				t.Fatal(err)
			}
			defer tc.Close()
			tc.SetDeadline(time.Now().Add(harness.IOTimeout))
			go fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", tt.header))
			line, err := bufio.NewReader(tc).ReadString('\n')
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if !strings.HasPrefix(line, "HTTP/1.1 "+tt.status+" ") {
				t.Errorf("answered %q, want %s", strings.TrimSpace(line), tt.status)
			}
		})
	}
}

// TestStalledTarget gives the server a stream whose target accepted the
// connection and stopped reading, fills it, and kills the client: the
// session must still end on the server, its stream and its count go, and a
// SIGTERM must then stop the server within --shutdown-timeout.
func TestStalledTarget(t *testing.T) {
	t.Parallel()
	done := make(chan struct{})
	target := harness.StartTarget(t, func(c *net.TCPConn) { <-done })
	t.Cleanup(func() { close(done) }) // before the target's cleanup waits
	keepalive := []string{"--keepalive", faultKeepalive.String()}
	srv, admin := startAdminServer(t, append([]string{"--shutdown-timeout", "1s"}, keepalive...)...)
	client, locals := burrow.StartClient(t, srv.URL, harness.TestUser+":"+harness.TestPass, append([]string{"--fingerprint", srv.Cert.Fingerprint}, keepalive...), "127.0.0.1:0:"+target)
	c, err := net.DialTimeout("tcp", locals[0], harness.IOTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	n, _ := io.Copy(c, io.LimitReader(zeroStream{}, 64<<20))
	t.Logf("the stalled target took %.1f MiB before the writes stopped", float64(n)/(1<<20))
	if n == 0 {
		t.Fatal("nothing could be written to the forward")
	}
	if f := footprintFrom(mustMetrics(t, admin)); f.sessions != 1 || f.streams != 1 {
		t.Fatalf("with the stalled stream open the server counts %v, want 1 session and 1 tcp stream", f)
	}

	client.Kill(t)
	killed := time.Now()
	// The kill closes the client's socket; even a silent death would
	// be noticed within lossBound.
	srv.WaitLog(t, regexp.MustCompile(`msg="session closed"`), lossBound)
	t.Logf("server closed the session %v after the client died", time.Since(killed).Round(time.Millisecond))
	if f := footprintFrom(mustMetrics(t, admin)); f.sessions != 0 || f.streams != 0 {
		t.Errorf("after the session closed the server still counts %v", f)
	}
	srv.Signal(t, syscall.SIGTERM)
	stopped := time.Now()
	if code := srv.WaitExit(t, harness.ExitTimeout); code != 0 {
		t.Errorf("server exited with code %d after SIGTERM", code)
	}
	if took := time.Since(stopped); took > time.Second+2*time.Second {
		t.Errorf("server took %v to exit after SIGTERM with --shutdown-timeout 1s", took.Round(time.Millisecond))
	}
}

// zeroStream reads as an endless run of zero bytes.
type zeroStream struct{}

func (zeroStream) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHeaderlessStreams opens many more streams than --max-streams on one
// authenticated session and sends no header on any: the server may keep at
// most --max-streams of them, and must close them all by --header-timeout,
// while the session goes on carrying a good stream.
func TestHeaderlessStreams(t *testing.T) {
	t.Parallel()
	const (
		maxStreams = 100
		opened     = 3000
		timeout    = 2 * time.Second
	)
	echo := harness.StartEcho(t)
	srv, admin := startAdminServer(t, "--max-streams", fmt.Sprint(maxStreams), "--header-timeout", timeout.String())
	sess, err := newSessionDialer(t, srv, nil, harness.TestUser, harness.TestPass).dial()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	base := quietFootprint(t, admin, 1)
	start := time.Now()
	for i := range opened {
		st, err := sess.OpenStream()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		defer st.Close()
	}
	// The server's goroutines once it has accepted them all; one per
	// stream is kept.
	var peak float64
	pollUntil(t, harness.IOTimeout, "the streams accepted", func() bool {
		peak = footprintFrom(mustMetrics(t, admin)).goroutines
		return peak >= base.goroutines+maxStreams || time.Since(start) > timeout/2
	})
	time.Sleep(200 * time.Millisecond)
	peak = max(peak, footprintFrom(mustMetrics(t, admin)).goroutines)
	t.Logf("%d streams without a header opened in %v; the server went from %.0f to %.0f goroutines", opened,
		time.Since(start).Round(time.Millisecond), base.goroutines, peak)

	// All of them go at the header timeout, and the session still works.
	awaitBaseline(t, admin, base, 10, 5, timeout+harness.IOTimeout)
	t.Logf("all closed %v after the first was opened", time.Since(start).Round(time.Millisecond))
	st, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: echo}, harness.IOTimeout)
	if err != nil {
		t.Fatalf("a good stream after the headerless ones: %v", err)
	}
	defer st.Close()
	if _, _, err := echoMessages(st, [32]byte{7}, 4096, time.Now().Add(100*time.Millisecond)); err != nil {
		t.Fatalf("a good stream after the headerless ones: %v", err)
	}
	// One goroutine per stream waiting for its header, and a few that
	// come and go with the scrapes.
	if held := peak - base.goroutines; held > maxStreams+50 {
		t.Errorf("with --max-streams %d the server held %.0f more goroutines for %d headerless streams", maxStreams, held, opened)
	}
	hits := mustMetrics(t, admin)[`burrow_limit_hits_total{limit="streams_per_session"}`]
	t.Logf("streams refused over --max-streams: %.0f", hits)
	if hits == 0 || hits > opened-maxStreams {
		t.Errorf("burrow_limit_hits_total{limit=\"streams_per_session\"} = %.0f, want 1 to %d", hits, opened-maxStreams)
	}
}
