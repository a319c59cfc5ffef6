package integration

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
	"github.com/burrowtun/burrow/mux"
	"github.com/coder/websocket"
)

// Floods inside an authenticated session, from a user who speaks raw yamux:
// pings sent faster than the answers are read (the answers must stay
// bounded and the session end), and thousands of streams held to a target
// that never reads and then dropped at once (the server must stay
// responsive while it frees them). Another user is measured throughout.
// Neither test runs in parallel: each measures the server's memory and
// latencies, and holds thousands of file descriptors.

// The attacker's account; the good user is harness.TestUser.
const (
	floodUser = "mallory"
	floodPass = "mallory's long password"
)

// startFloodServer starts a server with an admin listener whose users file
// holds harness.TestUser and floodUser, and a client of harness.TestUser forwarding to an
// echo target. It returns the server, its admin address and the forward.
func startFloodServer(t *testing.T, args ...string) (srv *harness.Server, admin, forward string) {
	t.Helper()
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	burrow.NewUser(t, authfile, floodUser, floodPass)
	srv = burrow.StartServer(t, cert, authfile, append([]string{"--admin", "127.0.0.1:0"}, args...)...)
	admin = srv.AdminAddr(t)
	echo := harness.StartEcho(t)
	_, locals := burrow.StartClient(t, srv.URL, harness.TestUser+":"+harness.TestPass, []string{"--fingerprint", cert.Fingerprint}, "127.0.0.1:0:"+echo)
	return srv, admin, locals[0]
}

// floodMemory returns the resident set (VmRSS) and its peak so far (VmHWM)
// of process pid, in bytes.
func floodMemory(pid int) (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		name, value, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %q: %w", pid, line, err)
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	if rss == 0 || peak == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status has no VmRSS or VmHWM", pid)
	}
	return rss, peak, nil
}

// floodSample is one request of the good user's.
type floodSample struct {
	kind string // "round trip", "new connection" or "healthz"
	at   time.Time
	took time.Duration
	err  error
}

// floodProbe is the good user, measured: a round trip of 64 bytes on an
// open forwarded connection every interval, and every fifth interval a new
// connection through the forward and a GET of the admin /healthz. Each
// request gives up after floodProbeTimeout, which counts as a failure.
type floodProbe struct {
	mu      sync.Mutex
	samples []floodSample
	stop    chan struct{}
	done    chan struct{}
}

const floodProbeTimeout = 5 * time.Second

func startFloodProbe(forward, admin string, interval time.Duration) *floodProbe {
	p := &floodProbe{stop: make(chan struct{}), done: make(chan struct{})}
	go p.run(forward, admin, interval)
	return p
}

func (p *floodProbe) record(kind string, start time.Time, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.samples = append(p.samples, floodSample{kind: kind, at: start, took: time.Since(start), err: err})
}

func (p *floodProbe) run(forward, admin string, interval time.Duration) {
	defer close(p.done)
	var conn net.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	msg, back := make([]byte, 64), make([]byte, 64)
	roundTrip := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(floodProbeTimeout))
		if _, err := c.Write(msg); err != nil {
			return err
		}
		_, err := io.ReadFull(c, back)
		return err
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		start := time.Now()
		var err error
		if conn == nil {
			conn, err = net.DialTimeout("tcp", forward, floodProbeTimeout)
		}
		if err == nil {
			if err = roundTrip(conn); err != nil {
				conn.Close()
				conn = nil
			}
		}
		p.record("round trip", start, err)
		if i%5 != 0 {
			continue
		}
		start = time.Now()
		c, err := net.DialTimeout("tcp", forward, floodProbeTimeout)
		if err == nil {
			err = roundTrip(c)
			c.Close()
		}
		p.record("new connection", start, err)
		start = time.Now()
		err = floodHealthz(admin)
		p.record("healthz", start, err)
	}
}

// floodHealthz GETs /healthz, on a new connection, within floodProbeTimeout.
func floodHealthz(admin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), floodProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := adminHTTPClient.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz: HTTP %d", resp.StatusCode)
	}
	return nil
}

// end stops the probe and waits for it.
func (p *floodProbe) end() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// floodStats describes the samples of one kind taken in [from, to).
type floodStats struct {
	n, failed      int
	p50, p99, peak time.Duration
	firstErr       error
}

func (s floodStats) String() string {
	return fmt.Sprintf("%d requests, p50 %v, p99 %v, max %v, %d failed", s.n, s.p50, s.p99, s.peak, s.failed)
}

func (p *floodProbe) stats(kind string, from, to time.Time) floodStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s floodStats
	var took []time.Duration
	for _, x := range p.samples {
		if x.kind != kind || x.at.Before(from) || !x.at.Before(to) {
			continue
		}
		s.n++
		if x.err != nil {
			s.failed++
			if s.firstErr == nil {
				s.firstErr = x.err
			}
			took = append(took, floodProbeTimeout)
			continue
		}
		took = append(took, x.took)
	}
	if len(took) == 0 {
		return s
	}
	slices.Sort(took)
	at := func(q float64) time.Duration {
		return took[min(len(took)-1, int(q*float64(len(took))))].Round(10 * time.Microsecond)
	}
	s.p50, s.p99, s.peak = at(0.50), at(0.99), took[len(took)-1].Round(10*time.Microsecond)
	return s
}

// floodDialWS logs in as floodUser and upgrades to the tunnel's WebSocket,
// speaking yamux on it raw. Its socket's receive buffer is 64 KiB, as a
// client that never reads would leave it: Linux would otherwise grow it up
// to tcp_rmem's maximum (32 MiB here) and take that much of the server's
// answers on the client's behalf. The caller closes it.
func floodDialWS(addr string) (*websocket.Conn, error) {
	header := http.Header{}
	(&http.Request{Header: header}).SetBasicAuth(floodUser, floodPass)
	ctx, cancel := context.WithTimeout(context.Background(), harness.IOTimeout)
	defer cancel()
	dialer := &net.Dialer{Timeout: harness.IOTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
		})
		return errors.Join(err, serr)
	}}
	hc := &http.Client{Transport: &http.Transport{
		DialContext:     dialer.DialContext,
		TLSClientConfig: attackTLS,
	}}
	defer hc.CloseIdleConnections()
	ws, _, err := websocket.Dial(ctx, "wss://"+addr, &websocket.DialOptions{
		HTTPClient:   hc,
		HTTPHeader:   header,
		Subprotocols: []string{mux.Subprotocol},
	})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(-1)
	return ws, nil
}

// floodPings appends n yamux ping requests (spec.md: version 0, type 2,
// flag SYN, stream 0, the ping's id as length), ids from first, to b.
func floodPings(b []byte, first uint32, n int) []byte {
	for i := range n {
		var h [12]byte
		h[1] = 2
		binary.BigEndian.PutUint16(h[2:], 1)
		binary.BigEndian.PutUint32(h[8:], first+uint32(i))
		b = append(b, h[:]...)
	}
	return b
}

// TestYamuxPingFlood sends 2,000,000 yamux pings, 1,000 to a WebSocket
// message, from a user who never reads a byte: the server must keep its
// memory (VmHWM) within 100 MiB of what it held before, end each flooding
// session (the attacker reconnects to go on until all are sent, and floods
// the last session until it ends too), and keep another user's round trip
// p99 under 50 ms throughout.
func TestYamuxPingFlood(t *testing.T) {
	const (
		total      = 2_000_000
		perMessage = 1000
		memBound   = 100 << 20
		rttBound   = 50 * time.Millisecond
		floodLimit = 2 * time.Minute // the whole flood, on a slow machine
	)
	srv, admin, forward := startFloodServer(t)
	pid := srv.Cmd.Process.Pid

	probe := startFloodProbe(forward, admin, 10*time.Millisecond)
	defer probe.end()
	time.Sleep(3 * time.Second)
	rssBefore, _, err := floodMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	floodStart := time.Now()
	base := probe.stats("round trip", floodStart.Add(-3*time.Second), floodStart)
	t.Logf("before the flood: server RSS %s; the good user's round trip: %v", mib(rssBefore), base)

	// Watch the server's memory while the flood runs; stop the flood as
	// soon as it is over the bound, which on a server that does not bound
	// its answers comes within seconds.
	var overBound atomic.Bool
	watchDone := make(chan struct{})
	stopWatch := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			if _, peak, err := floodMemory(pid); err == nil && peak-rssBefore > memBound {
				overBound.Store(true)
			}
			select {
			case <-stopWatch:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	var (
		sent, sessions, closedByServer int
		stalls                         int // writes the server did not take within 10 s
		lastErr                        error
	)
	msg := make([]byte, 0, 12*perMessage)
	var ws *websocket.Conn // the session flooding now
	for sent < total && !overBound.Load() && time.Since(floodStart) < floodLimit {
		if ws == nil {
			if ws, err = floodDialWS(srv.Addr); err != nil {
				t.Fatalf("attacker login %d: %v", sessions+1, err)
			}
			sessions++
		}
		msg = floodPings(msg[:0], uint32(sent), perMessage)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = ws.Write(ctx, websocket.MessageBinary, msg)
		cancel()
		if err != nil {
			// The server has closed the connection (or stopped reading
			// it): the attacker logs in again to go on.
			if errors.Is(err, context.DeadlineExceeded) {
				stalls++
			} else {
				closedByServer++
			}
			lastErr = err
			ws.CloseNow()
			ws = nil
			continue
		}
		sent += perMessage
	}
	sentEnd := time.Now()
	// The last session stays open, not read: the server must end it by
	// itself, as it ended those before.
	if ws != nil {
		deadline := time.Now().Add(harness.IOTimeout)
		for {
			if m, err := scrapeServerMetrics(admin); err == nil && m["burrow_sessions"] == 1 {
				closedByServer++
				break
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		ws.CloseNow()
	}
	floodEnd := time.Now()
	close(stopWatch)
	<-watchDone
	rssAfter, peak, err := floodMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	during := probe.stats("round trip", floodStart, floodEnd)
	t.Logf("%d pings (%s on the wire) written in %v over %d sessions, %d of them ended by the server (the last %v after the last ping; last write error: %v), %d writes stalled",
		sent, mib(int64(sent)*12), sentEnd.Sub(floodStart).Round(time.Millisecond), sessions, closedByServer,
		floodEnd.Sub(sentEnd).Round(time.Millisecond), lastErr, stalls)
	t.Logf("server RSS %s before, peak %s (+%s), %s after; the good user's round trip during the flood: %v",
		mib(rssBefore), mib(peak), mib(peak-rssBefore), mib(rssAfter), during)

	if overBound.Load() || peak-rssBefore > memBound {
		t.Errorf("the server's peak RSS grew by %s during the flood (after %d pings), more than %s", mib(peak-rssBefore), sent, mib(memBound))
	}
	if sent < total && !overBound.Load() {
		t.Errorf("only %d of %d pings sent within %v", sent, total, floodLimit)
	}
	if closedByServer != sessions {
		t.Errorf("the server ended %d of the %d sessions flooding it with pings", closedByServer, sessions)
	}
	// The bound, unless the machine is so loaded that the good user's
	// round trip before the flood was already half of it.
	if limit := max(rttBound, 2*base.p99); during.p99 > limit || during.failed > 0 {
		t.Errorf("the good user's round trip during the flood: %v; want p99 under %v and no failure (first: %v)", during, limit, during.firstErr)
	}
	// Once the attacker has gone, only the good user's session is left.
	pollUntil(t, harness.IOTimeout, "the attacker's sessions all closed", func() bool {
		return mustMetrics(t, admin)["burrow_sessions"] == 1
	})
}

// floodHoldTarget is a target that accepts connections and never reads
// them, held by one goroutine whatever their number (the race detector
// allows 8,128). It returns its address and how many it has accepted.
func floodHoldTarget(t *testing.T) (addr string, accepted func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
}

// TestYamuxStreamsShutdown opens 20,000 streams on one session to a target
// that accepts and never reads (the server keeps --max-streams, 16,384, and
// refuses the rest), writes 1 KiB on each, holds them about 12 s, then
// closes the session while another user is active: the server must answer
// that user and /healthz throughout, every request within 1 s, and free
// every stream of the closed session within 10 s.
func TestYamuxStreamsShutdown(t *testing.T) {
	const (
		opened    = 20_000
		kept      = 16_384 // the server's default --max-streams
		hold      = 12 * time.Second
		respBound = time.Second
		freeBound = 10 * time.Second
	)
	// Each process holds a descriptor per kept stream: the server its
	// connection to the target, this one the target's end.
	raiseFileLimit(t, kept+1024)
	target, accepted := floodHoldTarget(t)
	srv, admin, forward := startFloodServer(t)
	base := quietFootprint(t, admin, 1)

	probe := startFloodProbe(forward, admin, 50*time.Millisecond)
	defer probe.end()
	probeStart := time.Now()

	sess, err := newSessionDialer(t, srv, attackerIP, floodUser, floodPass).dial()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var (
		okCount, refused atomic.Int64
		otherErr         atomic.Pointer[error]
		wg               sync.WaitGroup
		next             atomic.Int64
	)
	payload := make([]byte, 1024)
	openStart := time.Now()
	for range 64 {
		wg.Go(func() {
			for next.Add(1) <= opened {
				st, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: target}, harness.IOTimeout)
				var remote *mux.RemoteError
				switch {
				case errors.As(err, &remote):
					refused.Add(1)
					continue
				case err != nil:
					otherErr.CompareAndSwap(nil, &err)
					return
				}
				okCount.Add(1)
				// The session's close ends the stream.
				st.SetWriteDeadline(time.Now().Add(harness.IOTimeout))
				if _, err := st.Write(payload); err != nil {
					otherErr.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if p := otherErr.Load(); p != nil {
		t.Fatalf("opening streams: %v (%d opened, %d refused)", *p, okCount.Load(), refused.Load())
	}
	t.Logf("%d streams opened and %d refused in %v; the target accepted %d connections",
		okCount.Load(), refused.Load(), time.Since(openStart).Round(time.Millisecond), accepted())
	if okCount.Load() != kept || refused.Load() != opened-kept {
		t.Errorf("the server kept %d streams and refused %d, want %d and %d", okCount.Load(), refused.Load(), kept, opened-kept)
	}
	pollUntil(t, harness.IOTimeout, "every kept stream counted", func() bool {
		return footprintFrom(mustMetrics(t, admin)).streams >= float64(okCount.Load())
	})
	held := footprintFrom(mustMetrics(t, admin))
	t.Logf("holding: server %v (baseline %v)", held, base)
	// About 12 s from the first open, and long enough after the last
	// for every stream to be idle and parked (the race detector slows
	// the opening down to about as long).
	time.Sleep(max(time.Until(openStart.Add(hold)), 2*time.Second))

	closed := time.Now()
	sess.Close()
	var freed time.Duration
	for {
		// A server too busy to answer its metrics within 10 s has not
		// freed its streams either.
		m, err := scrapeServerMetrics(admin)
		f := footprintFrom(m)
		// The probe's own forwarded connection is a stream, and its
		// goroutines come and go.
		if err == nil && f.sessions == 1 && f.streams <= 1 && f.goroutines <= base.goroutines+50 && f.fds <= base.fds+20 {
			freed = time.Since(closed)
			t.Logf("the closed session's streams freed %v after the close: %v", freed.Round(time.Millisecond), f)
			break
		}
		if time.Since(closed) > freeBound+floodProbeTimeout {
			t.Errorf("streams of the closed session not freed within %v: %v, metrics error %v (baseline %v)",
				time.Since(closed).Round(time.Millisecond), f, err, base)
			freed = time.Since(closed)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if freed > freeBound {
		t.Errorf("the closed session's streams took %v to free, want at most %v", freed.Round(time.Millisecond), freeBound)
	}
	// A second of the good user's life after the streams have gone.
	time.Sleep(time.Second)
	probe.end()
	end := time.Now()
	for _, kind := range []string{"round trip", "new connection", "healthz"} {
		before := probe.stats(kind, probeStart, closed)
		after := probe.stats(kind, closed, end)
		t.Logf("%s: while the streams were opened and held: %v; from the close on: %v", kind, before, after)
		for _, s := range []floodStats{before, after} {
			if s.n == 0 || s.failed > 0 || s.peak > respBound {
				t.Errorf("%s: %v; want every request within %v (first error: %v)", kind, s, respBound, s.firstErr)
			}
		}
	}
}
