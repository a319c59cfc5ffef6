package integration

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/integration/harness"
	"github.com/burrowtun/burrow/mux"
)

// Load and fairness through the real server binary. A thousand 'burrow
// client' processes do not fit on a small machine, so the load test opens
// its sessions in-process with package mux, as the client does; the
// head-of-line test uses the real client.

// startAdminServer starts a test server (see burrow.StartTestServer) with an
// admin listener and args, and returns it with the admin address.
func startAdminServer(t *testing.T, args ...string) (*harness.Server, string) {
	t.Helper()
	srv := burrow.StartTestServer(t, nil, append([]string{"--admin", "127.0.0.1:0", "--pprof"}, args...)...)
	return srv, srv.AdminAddr(t)
}

// adminHTTPClient scrapes without keeping connections, which would show as
// the server's goroutines and file descriptors.
var adminHTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// scrapeServerMetrics returns the samples the admin listener at admin exposes,
// keyed by series as written, e.g. burrow_streams_open{kind="tcp"}.
func scrapeServerMetrics(admin string) (map[string]float64, error) {
	resp, err := adminHTTPClient.Get("http://" + admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("/metrics: bad line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics: bad line %q", line)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// mustMetrics is scrapeServerMetrics for the test's goroutine.
func mustMetrics(t *testing.T, admin string) map[string]float64 {
	t.Helper()
	m, err := scrapeServerMetrics(admin)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// goroutineDump returns the start of the server's goroutine profile, for
// a failed leak check.
func goroutineDump(admin string) string {
	resp, err := adminHTTPClient.Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	return string(b)
}

// serverFootprint is what the leak checks compare.
type serverFootprint struct {
	goroutines, fds, sessions, streams float64
}

func footprintFrom(m map[string]float64) serverFootprint {
	return serverFootprint{m["go_goroutines"], m["process_open_fds"], m["burrow_sessions"], m[`burrow_streams_open{kind="tcp"}`]}
}

func (f serverFootprint) String() string {
	return fmt.Sprintf("%.0f goroutines, %.0f open fds, %.0f sessions, %.0f tcp streams", f.goroutines, f.fds, f.sessions, f.streams)
}

// quietFootprint waits until the server has exactly sessions sessions and
// no stream, and returns its footprint then, the least of a few scrapes.
func quietFootprint(t *testing.T, admin string, sessions float64) serverFootprint {
	t.Helper()
	best := serverFootprint{sessions: sessions}
	deadline := time.Now().Add(harness.IOTimeout)
	for i := 0; i < 3; {
		f := footprintFrom(mustMetrics(t, admin))
		if f.sessions != sessions || f.streams != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("server not quiet within %v: %v, want %.0f sessions and no stream", harness.IOTimeout, f, sessions)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if i == 0 || f.goroutines < best.goroutines {
			best.goroutines = f.goroutines
		}
		if i == 0 || f.fds < best.fds {
			best.fds = f.fds
		}
		i++
		time.Sleep(200 * time.Millisecond)
	}
	return best
}

// awaitBaseline polls the server until it has as many sessions as base,
// no stream, and its goroutines and open files are back within margins of
// base; it fails the test with a goroutine dump if that takes longer than
// timeout. It returns when the server was first seen back (at most
// 100 ms and a scrape late).
func awaitBaseline(t *testing.T, admin string, base serverFootprint, goroutineMargin, fdMargin float64, timeout time.Duration) time.Time {
	t.Helper()
	start := time.Now()
	var f serverFootprint
	for {
		f = footprintFrom(mustMetrics(t, admin))
		scraped := time.Now()
		if f.sessions == base.sessions && f.streams == 0 && f.goroutines <= base.goroutines+goroutineMargin && f.fds <= base.fds+fdMargin {
			t.Logf("server back to its baseline (%v) after %v: %v", base, time.Since(start).Round(time.Millisecond), f)
			return scraped
		}
		if time.Since(start) > timeout {
			t.Fatalf("server not back to its baseline (%v, margins %.0f goroutines, %.0f fds) within %v: %v\n%s",
				base, goroutineMargin, fdMargin, timeout, f, goroutineDump(admin))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// raiseFileLimit raises the test process's soft limit on open files, which
// the servers it starts inherit, to its hard limit, and restores it when
// the test ends. It skips the test if even the hard limit is below need.
func raiseFileLimit(t *testing.T, need uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Max < need {
		t.Skipf("this test needs %d open files; the hard limit is %d", need, old.Max)
	}
	raised := syscall.Rlimit{Cur: old.Max, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// sessionDialer opens sessions to a test server in-process, as harness.TestUser,
// pinning the server's certificate as the client does.
type sessionDialer struct {
	url  string
	opts *mux.DialOptions
}

// newSessionDialer returns a dialer for srv whose connections come from
// the address from (nil: any), with password pass.
func newSessionDialer(t *testing.T, srv *harness.Server, from net.IP, user, pass string) *sessionDialer {
	t.Helper()
	tlsConfig, err := certs.ClientConfig(certs.ClientOptions{Fingerprint: srv.Cert.Fingerprint})
	if err != nil {
		t.Fatal(err)
	}
	dialer := &net.Dialer{Timeout: harness.IOTimeout}
	if from != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: from}
	}
	transport := &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: harness.IOTimeout,
		DisableKeepAlives:   true,
	}
	t.Cleanup(transport.CloseIdleConnections)
	header := http.Header{}
	(&http.Request{Header: header}).SetBasicAuth(user, pass)
	return &sessionDialer{url: srv.URL, opts: &mux.DialOptions{HTTPClient: &http.Client{Transport: transport}, Header: header}}
}

func (d *sessionDialer) dial() (*mux.Session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), harness.IOTimeout)
	defer cancel()
	return mux.Dial(ctx, d.url, d.opts)
}

// echoMessages sends messages of random sizes up to maxMsg on st, made of the
// pseudo-random stream of key, and checks that each comes back whole from
// the echo target before sending the next, until stop. It then half-closes
// st and expects EOF with nothing more.
func echoMessages(st *mux.Stream, key [32]byte, maxMsg int, stop time.Time) (msgs, bytes int64, err error) {
	src := rand.NewChaCha8(key)
	sizes := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(key[:]), 1))
	out, in := make([]byte, maxMsg), make([]byte, maxMsg)
	for time.Now().Before(stop) {
		n := 1 + sizes.IntN(maxMsg)
		src.Read(out[:n])
		st.SetDeadline(time.Now().Add(harness.IOTimeout))
		// Messages fit the 256 KiB initial window, so the write cannot
		// wait for the reads below.
		if _, err := st.Write(out[:n]); err != nil {
			return msgs, bytes, fmt.Errorf("message %d: write: %w", msgs, err)
		}
		if _, err := io.ReadFull(st, in[:n]); err != nil {
			return msgs, bytes, fmt.Errorf("message %d: read echo: %w", msgs, err)
		}
		if !slices.Equal(in[:n], out[:n]) {
			return msgs, bytes, fmt.Errorf("message %d (%d bytes): echo differs at byte %d", msgs, n, firstDifference(in[:n], out[:n]))
		}
		msgs++
		bytes += int64(n)
	}
	st.SetDeadline(time.Now().Add(harness.IOTimeout))
	if err := st.Close(); err != nil {
		return msgs, bytes, fmt.Errorf("close: %w", err)
	}
	if extra, err := io.Copy(io.Discard, st); err != nil || extra != 0 {
		return msgs, bytes, fmt.Errorf("after the last message: %d more bytes, %v", extra, err)
	}
	return msgs, bytes, nil
}

// startEventEcho starts an echo target served by a single goroutine with
// epoll, for tests with more connections than the race detector allows
// goroutines (8,128): it echoes each connection until the client
// half-closes, then half-closes too. When the test ends it is stopped and
// every connection still open is closed; an error it met fails the test.
func startEventEcho(t *testing.T) string {
	t.Helper()
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(lfd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(lfd)
		t.Fatal(err)
	}
	if err := syscall.Listen(lfd, 4096); err != nil {
		syscall.Close(lfd)
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(lfd)
	if err != nil {
		syscall.Close(lfd)
		t.Fatal(err)
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		syscall.Close(lfd)
		t.Fatal(err)
	}
	e := &eventEcho{epfd: epfd, lfd: lfd, conns: map[int]*echoState{}, buf: make([]byte, 64<<10)}
	if err := e.watch(syscall.EPOLL_CTL_ADD, lfd, syscall.EPOLLIN); err != nil {
		e.close()
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- e.loop(stop) }()
	t.Cleanup(func() {
		close(stop)
		if err := <-done; err != nil {
			t.Errorf("echo target: %v", err)
		}
	})
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// eventEcho is the state of startEventEcho's goroutine, which alone
// touches it.
type eventEcho struct {
	epfd, lfd int
	conns     map[int]*echoState
	buf       []byte
}

// echoState is one connection: bytes read and not yet echoed, whether the
// client has half-closed, and whether it is waiting to be writable.
type echoState struct {
	pending []byte
	eof     bool
	out     bool
}

func (e *eventEcho) watch(op, fd int, events uint32) error {
	return syscall.EpollCtl(e.epfd, op, fd, &syscall.EpollEvent{Events: events, Fd: int32(fd)})
}

// loop serves events until stop, then closes everything.
func (e *eventEcho) loop(stop <-chan struct{}) error {
	defer e.close()
	events := make([]syscall.EpollEvent, 256)
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		n, err := syscall.EpollWait(e.epfd, events, 100)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == e.lfd {
				if err := e.accept(); err != nil {
					return err
				}
				continue
			}
			if err := e.serve(int(ev.Fd)); err != nil {
				return err
			}
		}
	}
}

// accept takes every connection waiting on the listener.
func (e *eventEcho) accept() error {
	for {
		fd, _, err := syscall.Accept4(e.lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		switch {
		case err == syscall.EAGAIN:
			return nil
		case err == syscall.EINTR || err == syscall.ECONNABORTED:
			continue
		case err != nil:
			return fmt.Errorf("accept: %w", err)
		}
		e.conns[fd] = &echoState{}
		if err := e.watch(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLIN|syscall.EPOLLRDHUP); err != nil {
			return fmt.Errorf("epoll_ctl: %w", err)
		}
	}
}

// serve echoes what fd has to read until it would block, and ends the
// connection once the client's half-close has been echoed.
func (e *eventEcho) serve(fd int) error {
	c := e.conns[fd]
	if c == nil {
		return nil
	}
	for {
		if len(c.pending) > 0 {
			n, err := syscall.Write(fd, c.pending)
			if n > 0 {
				c.pending = c.pending[n:]
			}
			switch {
			case err == syscall.EAGAIN:
				return e.wantWrite(fd, c, true)
			case err == syscall.EINTR:
			case err != nil:
				e.drop(fd) // the far end went away; its test says so
				return nil
			}
			continue
		}
		if c.eof {
			syscall.Shutdown(fd, syscall.SHUT_WR)
			e.drop(fd)
			return nil
		}
		n, err := syscall.Read(fd, e.buf)
		switch {
		case n > 0:
			c.pending = append(c.pending[:0], e.buf[:n]...)
		case err == nil:
			c.eof = true
		case err == syscall.EAGAIN:
			return e.wantWrite(fd, c, false)
		case err == syscall.EINTR:
		default:
			e.drop(fd)
			return nil
		}
	}
}

// wantWrite waits for fd to be writable (out) or readable.
func (e *eventEcho) wantWrite(fd int, c *echoState, out bool) error {
	if c.out == out {
		return nil
	}
	c.out = out
	events := uint32(syscall.EPOLLIN | syscall.EPOLLRDHUP)
	if out {
		events = syscall.EPOLLOUT
	}
	if err := e.watch(syscall.EPOLL_CTL_MOD, fd, events); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

func (e *eventEcho) drop(fd int) {
	syscall.Close(fd) // also takes it out of the epoll set
	delete(e.conns, fd)
}

func (e *eventEcho) close() {
	for fd := range e.conns {
		e.drop(fd)
	}
	syscall.Close(e.lfd)
	syscall.Close(e.epfd)
}

// loadStream is one stream of TestLoad: what it sends, and the same
// pseudo-random bytes again to check the echo against.
type loadStream struct {
	st               *mux.Stream
	src, want        *rand.ChaCha8
	sizes            *rand.Rand
	msgs, bytes      int64
	lastSize, number int
}

// driveSession opens n streams to echo on sess, reports on opened, and
// once begin is closed echoes on all of them together until stop, and at
// least once: each round writes a message of up to maxMsg bytes on every
// stream, then reads every echo back and checks it. Once release is
// closed it half-closes every stream and expects each to end with nothing
// more. One goroutine drives a whole session, so that the race detector's
// goroutine limit allows 1,000 of them.
//
// On a loaded machine a driver may first run after stop: the first round
// is then its only one, so that every stream is still checked.
func driveSession(sess *mux.Session, session, n int, echo string, maxMsg int, opened chan<- error, begin <-chan struct{}, stop *time.Time, release <-chan struct{}) (msgs, bytes int64, err error) {
	streams := make([]*loadStream, n)
	var openErr error
	for j := range streams {
		var key [32]byte
		binary.LittleEndian.PutUint64(key[:], uint64(session))
		binary.LittleEndian.PutUint64(key[8:], uint64(j))
		st, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: echo}, harness.IOTimeout)
		if err != nil {
			openErr = fmt.Errorf("session %d stream %d: open: %w", session, j, err)
			break
		}
		defer st.Close()
		streams[j] = &loadStream{st: st, src: rand.NewChaCha8(key), want: rand.NewChaCha8(key),
			sizes: rand.New(rand.NewPCG(uint64(session), uint64(j))), number: j}
	}
	opened <- openErr
	<-begin
	if openErr != nil {
		return 0, 0, openErr
	}
	out, in, want := make([]byte, maxMsg), make([]byte, maxMsg), make([]byte, maxMsg)
	for round := 0; round == 0 || time.Now().Before(*stop); round++ {
		// Messages fit the 256 KiB initial window: the writes cannot
		// wait for the reads that follow.
		for _, ls := range streams {
			ls.lastSize = 1 + ls.sizes.IntN(maxMsg)
			ls.src.Read(out[:ls.lastSize])
			ls.st.SetDeadline(time.Now().Add(harness.IOTimeout))
			if _, err := ls.st.Write(out[:ls.lastSize]); err != nil {
				return msgs, bytes, fmt.Errorf("session %d stream %d message %d: write: %w", session, ls.number, ls.msgs, err)
			}
		}
		for _, ls := range streams {
			if _, err := io.ReadFull(ls.st, in[:ls.lastSize]); err != nil {
				return msgs, bytes, fmt.Errorf("session %d stream %d message %d: read echo: %w", session, ls.number, ls.msgs, err)
			}
			ls.want.Read(want[:ls.lastSize])
			if !slices.Equal(in[:ls.lastSize], want[:ls.lastSize]) {
				return msgs, bytes, fmt.Errorf("session %d stream %d message %d (%d bytes): echo differs at byte %d",
					session, ls.number, ls.msgs, ls.lastSize, firstDifference(in[:ls.lastSize], want[:ls.lastSize]))
			}
			ls.msgs++
			ls.bytes += int64(ls.lastSize)
			msgs++
			bytes += int64(ls.lastSize)
		}
	}
	<-release
	for _, ls := range streams {
		ls.st.SetDeadline(time.Now().Add(harness.IOTimeout))
		if err := ls.st.Close(); err != nil {
			return msgs, bytes, fmt.Errorf("session %d stream %d: close: %w", session, ls.number, err)
		}
	}
	for _, ls := range streams {
		if extra, err := io.Copy(io.Discard, ls.st); err != nil || extra != 0 {
			return msgs, bytes, fmt.Errorf("session %d stream %d: after the last message: %d more bytes, %v", session, ls.number, extra, err)
		}
		if ls.msgs == 0 {
			return msgs, bytes, fmt.Errorf("session %d stream %d carried no message", session, ls.number)
		}
	}
	return msgs, bytes, nil
}

// openFiles counts this process's open file descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestLoad runs 1,000 sessions of 10 streams each through the real server,
// each stream echoing checked messages for a fixed time (at least one
// message, however loaded the machine), then closes
// everything and checks that the server's goroutines, open files and
// session count, and this process's goroutines and open files (its
// sessions run package mux as the client does), return to where they
// were. Not parallel: it wants the machine.
func TestLoad(t *testing.T) {
	const sessions, perSession = 1000, 10
	traffic, maxMsg := 10*time.Second, 16<<10
	if raceEnabled {
		// The same sessions and streams; the detector slows every
		// checked byte, so fewer of them.
		traffic, maxMsg = 5*time.Second, 4<<10
		t.Logf("race detector on: messages of up to %d KiB for %v", maxMsg>>10, traffic)
	}
	streams := sessions * perSession
	// This process holds a connection per session and an echo connection
	// per stream; so does the server, which inherits the limit.
	raiseFileLimit(t, uint64(sessions+streams+1024))
	echo := startEventEcho(t)
	srv, admin := startAdminServer(t, "--max-sessions-per-user", strconv.Itoa(2*sessions))
	d := newSessionDialer(t, srv, nil, harness.TestUser, harness.TestPass)

	// One session first: the password check it costs is then cached, and
	// what the server and this process start once is in the baselines.
	warm, err := d.dial()
	if err != nil {
		t.Fatal(err)
	}
	st, err := mux.Open(warm, mux.Header{Kind: mux.KindTCP, Target: echo}, harness.IOTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := echoMessages(st, [32]byte{1}, maxMsg, time.Now().Add(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	warm.Close()
	base := quietFootprint(t, admin, 0)
	ownGoroutines, ownFiles := runtime.NumGoroutine(), openFiles(t)
	t.Logf("baseline: server %v; this process %d goroutines, %d open files", base, ownGoroutines, ownFiles)

	// Open the sessions, 32 handshakes at a time.
	dialStart := time.Now()
	sess := make([]*mux.Session, sessions)
	handshakes := make([]time.Duration, sessions)
	errs := make(chan error, sessions)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range sess {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			s, err := d.dial()
			handshakes[i] = time.Since(t0)
			if err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
				return
			}
			sess[i] = s
		}()
	}
	wg.Wait()
	closeAll := func() {
		for i, s := range sess {
			if s != nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.Close()
				}()
				sess[i] = nil
			}
		}
		wg.Wait()
	}
	t.Cleanup(closeAll)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.Sort(handshakes)
	t.Logf("%d sessions opened in %v; handshake p50 %v, p99 %v", sessions, time.Since(dialStart).Round(time.Millisecond),
		handshakes[len(handshakes)/2].Round(time.Millisecond), handshakes[len(handshakes)*99/100].Round(time.Millisecond))

	// Each session's driver opens its streams; the traffic starts on all
	// of them at once.
	type result struct {
		msgs, bytes int64
		err         error
	}
	results := make(chan result, sessions)
	opened := make(chan error, sessions)
	var stop time.Time // set before begin is closed
	begin := make(chan struct{})
	var beginOnce sync.Once
	start := func(at time.Time) { beginOnce.Do(func() { stop = at; close(begin) }) }
	// The streams stay open until the count under load has been taken,
	// however late that is.
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseStreams := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(func() { start(time.Now()); releaseStreams() }) // a failed test lets them go
	for i, s := range sess {
		go func() {
			var r result
			r.msgs, r.bytes, r.err = driveSession(s, i, perSession, echo, maxMsg, opened, begin, &stop, release)
			results <- r
		}()
	}
	for range sessions {
		if err := <-opened; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d streams opened %v after the first session", streams, time.Since(dialStart).Round(time.Millisecond))
	cpuBefore := mustMetrics(t, admin)["process_cpu_seconds_total"]
	trafficStart := time.Now()
	start(trafficStart.Add(traffic))

	// Halfway: everything is open on the server. Every stream has been
	// answered, but a loaded server can count one some time after its
	// answer; none is closed before release, so the count is waited for.
	time.Sleep(traffic / 2)
	var m map[string]float64
	var peak serverFootprint
	for deadline := time.Now().Add(harness.IOTimeout); ; time.Sleep(100 * time.Millisecond) {
		m = mustMetrics(t, admin)
		peak = footprintFrom(m)
		if peak.sessions == sessions && peak.streams == float64(streams) || time.Now().After(deadline) {
			break
		}
	}
	if peak.sessions != sessions || peak.streams != float64(streams) {
		t.Errorf("under load the server counts %v within %v, want %d sessions and %d tcp streams", peak, harness.IOTimeout, sessions, streams)
	}
	t.Logf("under load: server %v, %.0f MiB resident; this process %d goroutines, %d open files",
		peak, m["process_resident_memory_bytes"]/(1<<20), runtime.NumGoroutine(), openFiles(t))
	releaseStreams()

	var msgs, total int64
	failed := 0
	for range sessions {
		r := <-results
		msgs += r.msgs
		total += r.bytes
		if r.err != nil {
			if failed++; failed <= 10 {
				t.Error(r.err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d sessions failed", failed, sessions)
	}
	elapsed := time.Since(trafficStart)
	cpu := mustMetrics(t, admin)["process_cpu_seconds_total"] - cpuBefore
	t.Logf("%d messages, %.1f MiB each way, every byte checked, in %v: %.0f messages/s, %.1f MiB/s each way; the server used %.1f s of CPU",
		msgs, float64(total)/(1<<20), elapsed.Round(time.Millisecond), float64(msgs)/elapsed.Seconds(), float64(total)/(1<<20)/elapsed.Seconds(), cpu)

	closing := time.Now()
	closeAll()
	t.Logf("sessions closed in %v", time.Since(closing).Round(time.Millisecond))
	awaitBaseline(t, admin, base, 10, 5, 30*time.Second)
	if hits := m[`burrow_limit_hits_total{limit="sessions_per_user"}`]; hits != 0 {
		t.Errorf("the load hit the per-user session limit %v times", hits)
	}
	// This process: the sessions' goroutines (yamux's loops, keepalive,
	// pings) and connections go too. A few of the runtime's and
	// net/http's may come and go.
	deadline := time.Now().Add(30 * time.Second)
	for {
		g, f := runtime.NumGoroutine(), openFiles(t)
		if g <= ownGoroutines+10 && f <= ownFiles+5 {
			t.Logf("this process back to %d goroutines and %d open files after %v", g, f, time.Since(closing).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 64<<10)
			t.Fatalf("this process still has %d goroutines and %d open files 30 s after closing its sessions, %d and %d before\n%s",
				g, f, ownGoroutines, ownFiles, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHeadOfLine checks that streams of one session do not wait for each
// other: a forwarded transfer is measured through a client whose session
// also carries two stalled streams, one whose target accepted and never
// reads, one whose local reader never reads what its target sends, each
// with its window full, and without them. Not parallel: it measures.
func TestHeadOfLine(t *testing.T) {
	const (
		rounds    = 10   // pairs of measurements with and without the stall, alternating which goes first
		maxSlower = 0.10 // the median with the stall may be this much slower
	)
	size := int64(32 << 20) // bytes echoed per measurement
	if raceEnabled {
		size = 8 << 20 // the race detector slows the checking of every byte here
	}
	echo := harness.StartEcho(t)

	// A target that accepts and does not read until told.
	type deafConn struct{ release chan struct{} }
	deafConns := make(chan deafConn, rounds)
	stopTargets := make(chan struct{})
	deaf := harness.StartTarget(t, func(c *net.TCPConn) {
		dc := deafConn{make(chan struct{})}
		deafConns <- dc
		select {
		case <-dc.release:
			c.SetDeadline(time.Now().Add(harness.IOTimeout))
			io.Copy(io.Discard, c)
		case <-stopTargets:
		}
	})
	// A target that writes without end until told to stop.
	var fired atomic.Int64
	firehoseConns := make(chan deafConn, rounds)
	firehose := harness.StartTarget(t, func(c *net.TCPConn) {
		dc := deafConn{make(chan struct{})}
		firehoseConns <- dc
		go func() {
			select {
			case <-dc.release:
			case <-stopTargets:
			}
			c.CloseWrite()
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Write(buf)
			fired.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	// Registered after the targets, so run before their cleanups wait for
	// the handlers.
	t.Cleanup(func() { close(stopTargets) })

	tun := burrow.StartTunnel(t, nil, nil, nil, "127.0.0.1:0:"+echo, "127.0.0.1:0:"+deaf, "127.0.0.1:0:"+firehose)
	measured, deafLocal, firehoseLocal := tun.Locals[0], tun.Locals[1], tun.Locals[2]

	// settled waits until counter has not moved for 300 ms.
	settled := func(what string, counter func() int64) int64 {
		t.Helper()
		last, since := counter(), time.Now()
		deadline := time.Now().Add(harness.IOTimeout)
		for time.Since(since) < 300*time.Millisecond {
			if time.Now().After(deadline) {
				t.Fatalf("%s still moving after %v", what, harness.IOTimeout)
			}
			time.Sleep(20 * time.Millisecond)
			if n := counter(); n != last {
				last, since = n, time.Now()
			}
		}
		return last
	}

	// stall opens both stalled streams and fills them; the returned
	// function ends them cleanly.
	stall := func() func() {
		t.Helper()
		up, err := net.DialTimeout("tcp", deafLocal, harness.IOTimeout)
		if err != nil {
			t.Fatal(err)
		}
		var written atomic.Int64
		wdone := make(chan error, 1)
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := up.Write(buf)
				written.Add(int64(n))
				if err != nil {
					wdone <- err
					return
				}
			}
		}()
		var dc deafConn
		select {
		case dc = <-deafConns:
		case <-time.After(harness.IOTimeout):
			t.Fatal("the deaf target was not reached")
		}
		before := fired.Load()
		down, err := net.DialTimeout("tcp", firehoseLocal, harness.IOTimeout)
		if err != nil {
			t.Fatal(err)
		}
		var fc deafConn
		select {
		case fc = <-firehoseConns:
		case <-time.After(harness.IOTimeout):
			t.Fatal("the firehose target was not reached")
		}
		upHeld := settled("the upload to the deaf target", written.Load)
		downHeld := settled("the firehose", fired.Load) - before
		if upHeld < 8<<20 || downHeld < 8<<20 {
			t.Fatalf("stalled streams took only %d and %d bytes before stopping; the stream window alone is 8 MiB", upHeld, downHeld)
		}
		t.Logf("stalled streams hold %.1f MiB (upload to a deaf target) and %.1f MiB (download nobody reads)",
			float64(upHeld)/(1<<20), float64(downHeld)/(1<<20))
		return func() {
			t.Helper()
			// The deaf target drains what was sent; the upload then ends
			// with a half-close, and the echo-less target closes.
			close(dc.release)
			up.SetDeadline(time.Now().Add(harness.IOTimeout))
			up.(*net.TCPConn).CloseWrite()
			<-wdone
			io.Copy(io.Discard, up)
			up.Close()
			// The firehose stops; its backlog is read to the end.
			close(fc.release)
			down.SetDeadline(time.Now().Add(harness.IOTimeout))
			if _, err := io.Copy(io.Discard, down); err != nil {
				t.Errorf("draining the firehose: %v", err)
			}
			down.Close()
		}
	}

	// Each measurement runs the same transfer at the same time through a
	// second client, whose session has no stalled stream: the ratio of
	// the two durations cancels most of what the machine's other load
	// does to both.
	_, controlLocals := burrow.StartClient(t, tun.Server.URL, harness.TestUser+":"+harness.TestPass, []string{"--fingerprint", tun.Server.Cert.Fingerprint}, "127.0.0.1:0:"+echo)
	control := controlLocals[0]
	// measure returns the measured forward's transfer time and its ratio
	// to the control's.
	measure := func(seed uint64) (time.Duration, float64) {
		t.Helper()
		var results [2]echoResult
		var wg sync.WaitGroup
		for i, local := range []string{measured, control} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = pumpEcho(local, seed+uint64(i)<<32, size, time.Minute)
			}()
		}
		wg.Wait()
		for _, r := range results {
			if r.err != nil {
				t.Fatalf("echo of %d bytes: %v (%d intact)", size, r.err, r.echoed)
			}
		}
		return results[0].elapsed, results[0].elapsed.Seconds() / results[1].elapsed.Seconds()
	}
	median := func(d []float64) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return (s[len(s)/2] + s[(len(s)-1)/2]) / 2
	}

	measure(0) // warm up
	// The machine's load drifts while a test runs: besides the control,
	// each measurement with the stall is paired with the one made just
	// before or after it without, and the median of those pairs' ratios
	// is what must stay within bounds. A busy machine gets up to three
	// attempts.
	var attempts []string
	for attempt := range 3 {
		var alone, stalled []time.Duration
		var ratios []float64
		for i := range rounds {
			seed := uint64(100*attempt + 2*i)
			var a, s time.Duration
			var ra, rs float64
			withStall := func() {
				end := stall()
				s, rs = measure(seed + 1)
				end()
				// What the stall held is garbage now; let the
				// collectors of both processes settle.
				time.Sleep(300 * time.Millisecond)
			}
			if i%2 == 1 {
				withStall()
			}
			a, ra = measure(seed)
			if i%2 == 0 {
				withStall()
			}
			alone, stalled = append(alone, a), append(stalled, s)
			ratios = append(ratios, rs/ra)
		}
		slower := median(ratios) - 1
		mibps := func(ds []time.Duration) float64 {
			var f []float64
			for _, d := range ds {
				f = append(f, float64(size)/(1<<20)/d.Seconds())
			}
			return median(f)
		}
		pct := make([]string, len(ratios))
		for i, r := range ratios {
			pct[i] = fmt.Sprintf("%+.0f%%", 100*(r-1))
		}
		report := fmt.Sprintf("%d MiB echo: median %.0f MiB/s alone, %.0f MiB/s beside two stalled streams of its session; "+
			"against the control session at the same time, paired ratios %s, median %+.1f%%; alone %v, stalled %v",
			size>>20, mibps(alone), mibps(stalled), strings.Join(pct, " "), 100*slower, roundDurations(alone), roundDurations(stalled))
		t.Log(report)
		attempts = append(attempts, report)
		if slower <= maxSlower {
			return
		}
	}
	t.Errorf("a transfer was more than %.0f%% slower beside stalled streams of the same session in every attempt:\n%s",
		100*maxSlower, strings.Join(attempts, "\n"))
}

func roundDurations(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
