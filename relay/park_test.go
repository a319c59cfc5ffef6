package relay

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// startLineTarget starts a TCP service that echoes each line, closes the
// connection on the line "close", and once its client half-closes,
// half-closes too.
func startLineTarget(t *testing.T) string {
	return startTCPService(t, func(c *net.TCPConn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil || line == "close\n" {
				c.CloseWrite()
				return
			}
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	})
}

// parkedCount reports the directions parked on p: on sess's streams and
// on sockets.
func parkedCount(p *Parking, sess *mux.Session) (streams, conns int) {
	p.mu.Lock()
	poll := p.poll
	p.mu.Unlock()
	streams = sess.Parked()
	if poll != nil {
		conns = poll.count()
	}
	return streams, conns
}

// waitParked waits until n streams' directions are parked on both sides,
// and no goroutine waits for a splice.
func waitParked(t *testing.T, p *Parking, sess *mux.Session, n int) {
	t.Helper()
	wantConns, wantGoroutines := n, 0
	if runtime.GOOS != "linux" {
		wantConns, wantGoroutines = 0, n // sockets park only on Linux
	}
	var streams, conns, gs int
	for deadline := time.Now().Add(testTimeout); time.Now().Before(deadline); {
		streams, conns = parkedCount(p, sess)
		gs = pipeGoroutines()
		if streams == n && conns == wantConns && gs == wantGoroutines {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("parked: %d stream and %d socket directions, %d goroutines waiting; want %d, %d and %d",
		streams, conns, gs, n, wantConns, wantGoroutines)
}

// TestParkingSplice carries streams to a TCP service through
// Parking.SpliceTCP as the server does, and checks that idle streams park
// both directions (no goroutine each), that data either way wakes them,
// and that every way a stream ends reaches closed with the right counts:
// the client's FIN, the service closing first, and the session's end.
func TestParkingSplice(t *testing.T) {
	p := NewParking(0)
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Parking.Close: %v", err)
		}
	})
	ts := startTunnelServer(t, serverOptions{tr: transports[2], cfg: nil})
	client, server := ts.dial(t, nil)
	target := startLineTarget(t)
	closed := make(chan spliced, 100)
	var dialer net.Dialer
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			err = p.SpliceTCP(context.Background(), st, dialer.DialContext, target, testTimeout, nil,
				func(sent, received int64) { closed <- spliced{sent, received} })
			if err != nil {
				t.Errorf("SpliceTCP: %v", err)
			}
		}
	})
	t.Cleanup(func() { server.Close(); wg.Wait() })

	const n = 40
	streams := make([]*mux.Stream, n)
	readers := make([]*bufio.Reader, n)
	sent := make([]int64, n)
	for i := range streams {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(testTimeout))
		if err := mux.ReadReply(st); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		streams[i], readers[i] = st, bufio.NewReader(st)
	}
	roundTrip := func(i int, msg string) {
		t.Helper()
		line := fmt.Sprintf("%s %d\n", msg, i)
		if _, err := io.WriteString(streams[i], line); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		sent[i] += int64(len(line))
		got, err := readers[i].ReadString('\n')
		if err != nil || got != line {
			t.Fatalf("stream %d echoed %q, %v; want %q", i, got, err, line)
		}
	}
	for i := range streams {
		roundTrip(i, "hello")
	}
	waitParked(t, p, server, n)
	for i := range streams {
		roundTrip(i, "again, after parking")
	}
	waitParked(t, p, server, n)

	wantClosed := func(what string, want spliced) {
		t.Helper()
		select {
		case got := <-closed:
			if got != want {
				t.Errorf("%s: closed reported %+v, want %+v", what, got, want)
			}
		case <-time.After(testTimeout):
			t.Fatalf("%s: closed not called", what)
		}
	}
	// The service closes first: the client reads EOF, then closes.
	io.WriteString(streams[0], "close\n")
	if b, err := io.ReadAll(readers[0]); err != nil || len(b) != 0 {
		t.Fatalf("stream 0 after the service closed: %q, %v; want EOF", b, err)
	}
	streams[0].Close()
	wantClosed("service closed first", spliced{sent[0] + 6, sent[0]})

	// The client half-closes a parked stream: the service sees EOF and
	// closes in turn.
	streams[1].Close()
	if b, err := io.ReadAll(readers[1]); err != nil || len(b) != 0 {
		t.Fatalf("stream 1 after its FIN: %q, %v; want EOF", b, err)
	}
	wantClosed("client half-closed", spliced{sent[1], sent[1]})
	waitParked(t, p, server, n-2)

	// The session ends with the rest parked: each one ends.
	var total int64
	for _, s := range sent[2:] {
		total += s
	}
	client.Close()
	var got spliced
	for i := 2; i < n; i++ {
		select {
		case c := <-closed:
			got.aToB += c.aToB
			got.bToA += c.bToA
		case <-time.After(testTimeout):
			t.Fatalf("%d of %d parked streams never ended after the session did", n-i, n-2)
		}
	}
	if got != (spliced{total, total}) {
		t.Errorf("streams cut by the session's end carried %+v, want %d each way", got, total)
	}
	if streams, conns := parkedCount(p, server); streams+conns != 0 {
		t.Errorf("after the session's end %d stream and %d socket directions are still parked", streams, conns)
	}
}

// startHoldTarget accepts TCP connections and holds them, never reading,
// on one goroutine whatever their number, until the test ends.
func startHoldTarget(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestParkingSessionEndPaced parks many splices of one session, then ends
// the session and the context the splices were started with, as a server
// does: the splices all end, a few at a time (see mux.Teardown), never with
// more than a few dozen goroutines running for them at once.
func TestParkingSessionEndPaced(t *testing.T) {
	p := NewParking(0)
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Parking.Close: %v", err)
		}
	})
	ts := startTunnelServer(t, serverOptions{tr: transports[2], cfg: nil})
	client, server := ts.dial(t, nil)
	target := startHoldTarget(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 400
	var ended sync.WaitGroup
	ended.Add(n)
	var dialer net.Dialer
	var accepting sync.WaitGroup
	accepting.Go(func() {
		for {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			err = p.SpliceTCP(ctx, st, dialer.DialContext, target, testTimeout, nil, func(int64, int64) { ended.Done() })
			if err != nil {
				t.Errorf("SpliceTCP: %v", err)
			}
		}
	})
	t.Cleanup(func() { server.Close(); accepting.Wait() })
	for i := range n {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(testTimeout))
		if err := mux.ReadReply(st); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	waitParked(t, p, server, n)

	base := runtime.NumGoroutine()
	stop := make(chan struct{})
	peak := make(chan int, 1)
	go func() {
		most := 0
		for {
			most = max(most, runtime.NumGoroutine())
			select {
			case <-stop:
				peak <- most
				return
			case <-time.After(50 * time.Microsecond):
			}
		}
	}()
	start := time.Now()
	client.Close()
	cancel()
	done := make(chan struct{})
	go func() { ended.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatalf("the parked splices did not all end within %v of the session's end", testTimeout)
	}
	close(stop)
	most := <-peak
	t.Logf("%d parked splices ended in %v; at most %d goroutines more than the %d before", n, time.Since(start).Round(time.Millisecond), most-base, base)
	if limit := 6*mux.TeardownParallel + 16; most-base > limit {
		t.Errorf("%d goroutines more than before while the splices ended, want at most %d", most-base, limit)
	}
}
