package client_test

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/burrowtun/burrow/client"
	"github.com/burrowtun/burrow/mux"
)

// request is what roundTrip sends.
const request = "hello through the tunnel"

// readRequest reads a stream's header and the request behind it without
// replying, as only a client that sends before the reply lets it.
func readRequest(st *mux.Stream) error {
	if _, err := mux.ReadHeader(st); err != nil {
		return err
	}
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, len(request))
	_, err := io.ReadFull(st, b)
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	return err
}

// TestForwardSendsBeforeReply checks that a forward's first bytes travel
// with the stream header, before the server's reply.
func TestForwardSendsBeforeReply(t *testing.T) {
	ts := newTunnelServerWith(t, func(st *mux.Stream, _ int32) {
		if err := readRequest(st); err != nil {
			mux.WriteReply(st, mux.Refuse(mux.CodeFailed, "no payload before the reply: %v", err))
			return
		}
		mux.WriteReply(st, nil)
		st.Write([]byte(request))
		io.Copy(st, st)
	})
	addr, _ := run(t, ts, client.Config{Username: "alice", Password: "secret"})
	roundTrip(t, addr)
}

// TestForwardReopensAfterRestart checks that a connection that has sent
// nothing yet is opened again on the next session when the server goes
// away before answering it.
func TestForwardReopensAfterRestart(t *testing.T) {
	var ts *tunnelServer
	ts = newTunnelServerWith(t, func(st *mux.Stream, session int32) {
		if session > 1 {
			echoStream(st, session)
			return
		}
		if _, err := mux.ReadHeader(st); err == nil {
			ts.dropSessions() // the server restarts with the stream unanswered
		}
	})
	addr, _ := run(t, ts, client.Config{Username: "alice", Password: "secret", MaxRetryInterval: 200 * time.Millisecond})
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for ts.sessions.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the client did not reconnect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Only now does the connection speak: nothing of it was lost.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(request))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != request {
		t.Fatalf("echo through the reopened stream: %q, %v", got, err)
	}
}

// TestForwardNoResendAfterRestart checks that a request sent before the
// reply is not sent again when the server goes away without answering:
// the server may have passed it on, so the local connection is closed
// instead and the reason logged.
func TestForwardNoResendAfterRestart(t *testing.T) {
	var seen [3]atomic.Int32 // requests seen on sessions 1 and 2
	var ts *tunnelServer
	ts = newTunnelServerWith(t, func(st *mux.Stream, session int32) {
		if err := readRequest(st); err != nil {
			return
		}
		seen[min(session, 2)].Add(1)
		if session == 1 {
			ts.dropSessions() // the server restarts with the request unanswered
			return
		}
		mux.WriteReply(st, nil)
		st.Write([]byte(request)) // the echo of what readRequest read
		io.Copy(st, st)
	})
	logs := &syncBuffer{}
	addr, _ := run(t, ts, client.Config{Username: "alice", Password: "secret", MaxRetryInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	requestClosed(t, addr)
	waitLog(t, logs, "not sent again")
	// The next connection works; the first request was seen once.
	roundTrip(t, addr)
	if n1, n2 := seen[1].Load(), seen[2].Load(); n1 != 1 || n2 != 1 {
		t.Fatalf("the server saw %d requests on the first session and %d on the next, want 1 and 1 (no resend)", n1, n2)
	}
}

// TestForwardEndsWithSession checks that a forwarded connection whose
// session dies is closed, and its stream logged closed, without waiting
// for the local application to write or close: it is not left half-open.
func TestForwardEndsWithSession(t *testing.T) {
	ts := newTunnelServerWith(t, echoStream)
	logs := &syncBuffer{}
	addr, _ := run(t, ts, client.Config{Username: "alice", Password: "secret", MaxRetryInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(request))); err != nil {
		t.Fatalf("echo through the forward: %v", err)
	}
	ts.dropSessions()
	if n, err := io.Copy(io.Discard, c); n != 0 || (err != nil && !isReset(err)) {
		t.Fatalf("after the session ended the connection read %d bytes, %v; want its end", n, err)
	}
	waitLog(t, logs, `msg="stream closed"`, `peer=`+c.LocalAddr().String())
}

// TestForwardRefused checks that a refused forward closes the local
// connection and logs the server's reason in one line.
func TestForwardRefused(t *testing.T) {
	ts := newTunnelServerWith(t, func(st *mux.Stream, _ int32) {
		if _, err := mux.ReadHeader(st); err == nil {
			mux.WriteReply(st, mux.Refuse(mux.CodeRefused, "connection refused by 127.0.0.1:9"))
		}
	})
	logs := &syncBuffer{}
	addr, _ := run(t, ts, client.Config{Username: "alice", Password: "secret", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	requestClosed(t, addr)
	waitLog(t, logs, `msg="forward refused" local=`+addr, `err="connection refused by 127.0.0.1:9"`)
}

// requestClosed sends request through the forward at addr and checks that
// the connection is closed without an answer.
func requestClosed(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(request))
	got, err := io.ReadAll(c)
	if len(got) != 0 || (err != nil && !isReset(err)) {
		t.Fatalf("read %q, %v; want the connection closed", got, err)
	}
}

// waitLog waits up to 10 s for every one of want to appear in logs.
func waitLog(t *testing.T, logs *syncBuffer, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		missing := ""
		for _, w := range want {
			if !strings.Contains(logs.String(), w) {
				missing = w
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log has no %s:\n%s", missing, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// syncBuffer is a bytes.Buffer that a logger may write while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
