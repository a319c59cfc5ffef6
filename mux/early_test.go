package mux

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// only returns a SessionFunc that always gives sess.
func only(sess *Session) SessionFunc {
	return func(context.Context) (*Session, error) { return sess, nil }
}

// firstLive returns a SessionFunc that gives the first of sessions that is
// not closed, as a client gives its live session.
func firstLive(sessions ...*Session) SessionFunc {
	return func(ctx context.Context) (*Session, error) {
		for _, s := range sessions {
			if !s.IsClosed() {
				return s, nil
			}
		}
		return nil, errors.New("no live session")
	}
}

// readEarly reads a header and n payload bytes from st without replying:
// they can only be there if the opener sent them before the reply.
func readEarly(st *Stream, n int) (Header, []byte, error) {
	st.SetReadDeadline(time.Now().Add(testTimeout))
	defer st.SetReadDeadline(time.Time{})
	h, err := ReadHeader(st)
	if err != nil {
		return h, nil, err
	}
	p := make([]byte, n)
	_, err = io.ReadFull(st, p)
	return h, p, err
}

func waitReply(t *testing.T, e *EarlyStream) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	return e.WaitReply(ctx)
}

// TestEarlyPayload checks that payload written before the reply reaches
// the acceptor ahead of its reply, in order with what follows it.
func TestEarlyPayload(t *testing.T) {
	t.Parallel()
	ts := startTunnelServer(t, serverOptions{tr: transport{}})
	client, server := ts.dial(t, nil)
	got := make(chan error, 1)
	serveStreams(t, server, func(st *Stream) {
		h, p, err := readEarly(st, len("hello "))
		if err == nil && (h != (Header{Kind: KindTCP, Target: "db:5432"}) || string(p) != "hello ") {
			err = errors.New("wrong header or early payload: " + h.Target + " " + string(p))
		}
		got <- err
		if err != nil {
			return
		}
		WriteReply(st, nil)
		st.Write(p)
		echo(st)
	})

	e, err := OpenEarly(t.Context(), only(client), Header{Kind: KindTCP, Target: "db:5432"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Write([]byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("acceptor, before replying: %v", err)
	}
	if err := waitReply(t, e); err != nil {
		t.Fatalf("WaitReply: %v", err)
	}
	if _, err := e.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	e.CloseWrite()
	e.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(e)
	if err != nil || string(b) != "hello world" {
		t.Fatalf("read %q, %v; want %q", b, err, "hello world")
	}
}

// TestEarlyReopen checks that when the session ends before the reply and
// only the header (and the half-close) had left, the stream is opened
// again on the next session with the same header and half-close.
func TestEarlyReopen(t *testing.T) {
	t.Parallel()
	ts := startTunnelServer(t, serverOptions{tr: transport{}})
	client1, server1 := ts.dial(t, nil)
	client2, server2 := ts.dial(t, nil)
	firstSaw := make(chan error, 1)
	serveStreams(t, server1, func(st *Stream) {
		// The server goes away with the stream unanswered.
		st.SetReadDeadline(time.Now().Add(testTimeout))
		_, err := ReadHeader(st)
		firstSaw <- err
		server1.Close()
	})
	secondSaw := make(chan string, 1)
	serveStreams(t, server2, func(st *Stream) {
		st.SetReadDeadline(time.Now().Add(testTimeout))
		h, err := ReadHeader(st)
		if err != nil {
			secondSaw <- err.Error()
			return
		}
		b, err := io.ReadAll(st) // to EOF: the half-close came again too
		if err != nil {
			secondSaw <- err.Error()
			return
		}
		secondSaw <- h.Target + " " + string(b)
		WriteReply(st, nil)
		st.Write([]byte("banner"))
	})

	e, err := OpenEarly(t.Context(), firstLive(client1, client2), Header{Kind: KindTCP, Target: "smtp:25"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := waitReply(t, e); err != nil {
		t.Fatalf("WaitReply: %v", err)
	}
	if err := <-firstSaw; err != nil {
		t.Fatalf("first session's acceptor: %v", err)
	}
	if got := <-secondSaw; got != "smtp:25 " {
		t.Fatalf("second session's acceptor got %q, want %q", got, "smtp:25 ")
	}
	if !client1.IsClosed() {
		t.Fatal("the first session is still open")
	}
	e.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(e)
	if err != nil || string(b) != "banner" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// TestEarlyNoResend checks that payload sent before the reply is never
// sent again: when the session ends before the reply, the stream fails
// with ErrEarlyDataSent and the next session sees no stream at all.
func TestEarlyNoResend(t *testing.T) {
	t.Parallel()
	ts := startTunnelServer(t, serverOptions{tr: transport{}})
	client1, server1 := ts.dial(t, nil)
	client2, server2 := ts.dial(t, nil)
	const request = "POST /pay HTTP/1.0\r\n\r\n"
	firstSaw := make(chan error, 1)
	serveStreams(t, server1, func(st *Stream) {
		// The request reached the server, which goes away unanswered.
		_, _, err := readEarly(st, len(request))
		firstSaw <- err
		server1.Close()
	})
	var second atomic.Int32
	serveStreams(t, server2, func(st *Stream) { second.Add(1) })

	e, err := OpenEarly(t.Context(), firstLive(client1, client2), Header{Kind: KindTCP, Target: "shop:80"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	if err := waitReply(t, e); !errors.Is(err, ErrEarlyDataSent) {
		t.Fatalf("WaitReply = %v, want ErrEarlyDataSent", err)
	}
	if err := <-firstSaw; err != nil {
		t.Fatalf("first session's acceptor: %v", err)
	}
	if _, err := e.Read(make([]byte, 1)); !errors.Is(err, ErrEarlyDataSent) {
		t.Errorf("Read = %v, want ErrEarlyDataSent", err)
	}
	if _, err := e.Write([]byte("more")); err == nil {
		t.Error("Write after the failure succeeded")
	}
	time.Sleep(100 * time.Millisecond) // a resend would have arrived by now
	if n := second.Load(); n != 0 || client2.NumStreams() != 0 {
		t.Fatalf("the next session got %d streams (%d open on the opener): the payload was sent again", n, client2.NumStreams())
	}
}

// TestEarlyBounded checks that at most MaxEarlyData bytes go out before
// the reply, and that the rest follows it.
func TestEarlyBounded(t *testing.T) {
	t.Parallel()
	ts := startTunnelServer(t, serverOptions{tr: transport{}})
	client, server := ts.dial(t, nil)
	const extra = 1000
	result := make(chan string, 1)
	serveStreams(t, server, func(st *Stream) {
		_, _, err := readEarly(st, MaxEarlyData)
		if err != nil {
			result <- "reading the early payload: " + err.Error()
			return
		}
		st.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, _ := st.Read(make([]byte, 1)); n != 0 {
			result <- "more than MaxEarlyData bytes arrived before the reply"
			return
		}
		st.SetReadDeadline(time.Now().Add(testTimeout))
		WriteReply(st, nil)
		rest, err := io.ReadAll(st)
		if err != nil || len(rest) != extra {
			result <- "after the reply: " + string(rest)
			return
		}
		result <- ""
	})

	e, err := OpenEarly(t.Context(), only(client), Header{Kind: KindTCP, Target: "sink:9"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	wrote := make(chan error, 1)
	go func() {
		n, err := e.Write(make([]byte, MaxEarlyData+extra))
		if err == nil && n != MaxEarlyData+extra {
			err = io.ErrShortWrite
		}
		if err == nil {
			err = e.CloseWrite()
		}
		wrote <- err
	}()
	if err := waitReply(t, e); err != nil {
		t.Fatalf("WaitReply: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("Write: %v", err)
	}
	if r := <-result; r != "" {
		t.Fatal(r)
	}
}

// TestEarlyNoReply checks that WaitReply gives up when its context ends,
// with the context's cause, and that a Close before the reply ends the
// wait at once.
func TestEarlyNoReply(t *testing.T) {
	t.Parallel()
	ts := startTunnelServer(t, serverOptions{tr: transport{}})
	client, server := ts.dial(t, nil)
	serveStreams(t, server, func(st *Stream) {
		st.SetReadDeadline(time.Now().Add(testTimeout))
		io.Copy(io.Discard, st) // never answers
	})

	t.Run("timeout", func(t *testing.T) {
		e, err := OpenEarly(t.Context(), only(client), Header{Kind: KindTCP, Target: "silent:1"})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		e.Write([]byte("anyone?"))
		cause := errors.New("timed out waiting for the server")
		ctx, cancel := context.WithTimeoutCause(t.Context(), 200*time.Millisecond, cause)
		defer cancel()
		start := time.Now()
		err = e.WaitReply(ctx)
		var re *RemoteError
		if !errors.Is(err, cause) || errors.As(err, &re) {
			t.Fatalf("WaitReply = %v, want %v", err, cause)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("WaitReply took %v to give up after 200ms", d)
		}
		if _, err := e.Read(make([]byte, 1)); !errors.Is(err, cause) {
			t.Fatalf("Read = %v, want %v", err, cause)
		}
	})
	t.Run("close", func(t *testing.T) {
		e, err := OpenEarly(t.Context(), only(client), Header{Kind: KindTCP, Target: "silent:1"})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var waitErr, readErr error
		wg.Go(func() { waitErr = waitReply(t, e) })
		wg.Go(func() { _, readErr = e.Read(make([]byte, 1)) })
		time.Sleep(50 * time.Millisecond)
		e.Close()
		wg.Wait()
		if !errors.Is(waitErr, net.ErrClosed) || !errors.Is(readErr, net.ErrClosed) {
			t.Fatalf("after Close: WaitReply = %v, Read = %v; want net.ErrClosed", waitErr, readErr)
		}
	})
}

// TestOpenEarlyNoSession checks that OpenEarly reports why it has no
// session, and refuses a header it cannot send.
func TestOpenEarlyNoSession(t *testing.T) {
	t.Parallel()
	none := func(context.Context) (*Session, error) { return nil, errors.New("no connection to the server") }
	if _, err := OpenEarly(t.Context(), none, Header{Kind: KindTCP, Target: "db:5432"}); err == nil || err.Error() != "no connection to the server" {
		t.Fatalf("OpenEarly = %v", err)
	}
	long := Header{Kind: KindTCP, Target: strings.Repeat("a", MaxTargetLen+1)}
	if _, err := OpenEarly(t.Context(), none, long); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("OpenEarly with a long target = %v", err)
	}
}
