package server_test

import (
	"io"
	"net"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
)

// holdTarget listens on loopback, echoes the first byte of each
// connection and then holds it open, idle, with no goroutine of its own.
func holdTarget(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		held []net.Conn
	)
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err == nil {
					c.Write(b)
				}
				c.SetDeadline(time.Time{})
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			})
		}
	})
	return l.Addr().String()
}

// goroutinesIn counts the goroutines with fn on their stack.
func goroutinesIn(fn string) int {
	var buf strings.Builder
	pprof.Lookup("goroutine").WriteTo(&buf, 2) // as runtime.Stack(all) prints them
	return strings.Count(buf.String(), fn+"(")
}

// TestIdleTCPStreams checks what an idle TCP stream costs the server: the
// two goroutines of its splice, one per direction, and not the one that
// read its header and dialed, which has gone; and that the stream is
// still logged and counted as open and then closed, and ends with its
// session.
func TestIdleTCPStreams(t *testing.T) {
	f := newFixture(t, server.Config{}, ".*")
	target := holdTarget(t)
	sess, err := f.dial(t, "alice", "alice-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	const n = 50
	streams := make([]*mux.Stream, n)
	for i := range streams {
		st, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: target}, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(10 * time.Second))
		b := []byte{byte(i)}
		st.Write(b)
		if _, err := io.ReadFull(st, b); err != nil || b[0] != byte(i) {
			t.Fatalf("stream %d: echo %v, %v", i, b, err)
		}
		st.SetDeadline(time.Time{})
		streams[i] = st
	}
	// Once idle, a stream holds no goroutine on the server: its two
	// directions are parked (relay.Parking), and the one that served it
	// has ended.
	count := func() (splicing, serving int) {
		// A splice's goroutine waits in wait or copies in copy (called
		// by wait, or started alone for a first burst): zero of both
		// frames means none.
		return goroutinesIn("relay.(*splice).wait") + goroutinesIn("relay.(*splice).copy"), goroutinesIn("server.(*Server).serveStream")
	}
	splicing, serving := count()
	for deadline := time.Now().Add(10 * time.Second); (splicing != 0 || serving != 0) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		splicing, serving = count()
	}
	if splicing != 0 || serving != 0 {
		t.Errorf("%d idle TCP streams: %d goroutines in a splice, %d serving; want none", n, splicing, serving)
	}
	if got := strings.Count(f.logs.String(), `msg="stream opened"`); got != n {
		t.Errorf("%d streams logged as opened, want %d", got, n)
	}
	for _, want := range []string{"session=", "user=alice", "stream=", "kind=tcp", "target=" + target} {
		if !strings.Contains(f.logs.String(), want) {
			t.Errorf("stream log lines lack %q:\n%s", want, f.logs.String())
		}
	}

	// Half the streams are closed by the client, the rest end with its
	// session, which the server then forgets.
	for _, st := range streams[:n/2] {
		st.Close()
	}
	sess.Close()
	deadline := time.Now().Add(10 * time.Second)
	for (f.srv.Sessions() != 0 || strings.Count(f.logs.String(), `msg="stream closed"`) != n) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := strings.Count(f.logs.String(), `msg="stream closed"`); got != n {
		t.Errorf("%d streams logged as closed, want %d", got, n)
	}
	if !strings.Contains(f.logs.String(), "bytes_out=1 bytes_in=1") {
		t.Errorf("no stream logged its byte counts:\n%s", f.logs.String())
	}
	if s := f.srv.Sessions(); s != 0 {
		t.Errorf("Sessions() = %d after the client closed, want 0", s)
	}
}
