package client_test

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/burrowtun/burrow/client"
	"github.com/burrowtun/burrow/mux"
	"github.com/hashicorp/yamux"
)

// request is what roundTrip sends.
const request = "hello through the tunnel"

// readRequest reads a stream's header and the request behind it without
// replying, as only a client that sends before the reply lets it.
func readRequest(st *yamux.Stream) error {
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
	ts := newTunnelServerWith(t, func(st *yamux.Stream, _ int32) {
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

// TestForwardResendsAfterRestart checks that a request sent before the
// reply is sent again on the next session when the server goes away
// without answering it.
func TestForwardResendsAfterRestart(t *testing.T) {
	var ts *tunnelServer
	ready := make(chan struct{})
	ts = newTunnelServerWith(t, func(st *yamux.Stream, session int32) {
		if session > 1 {
			echoStream(st, session)
			return
		}
		if err := readRequest(st); err != nil {
			mux.WriteReply(st, mux.Refuse(mux.CodeFailed, "no payload before the reply: %v", err))
			return
		}
		<-ready
		ts.dropSessions() // the server restarts with the request unanswered
	})
	close(ready)
	addr, _ := run(t, ts, client.Config{Username: "alice", Password: "secret", MaxRetryInterval: 200 * time.Millisecond})
	roundTrip(t, addr)
	if n := ts.sessions.Load(); n != 2 {
		t.Fatalf("server saw %d sessions, want 2 (one reconnect)", n)
	}
}

// TestForwardRefused checks that a refused forward closes the local
// connection and logs the server's reason in one line.
func TestForwardRefused(t *testing.T) {
	ts := newTunnelServerWith(t, func(st *yamux.Stream, _ int32) {
		if _, err := mux.ReadHeader(st); err == nil {
			mux.WriteReply(st, mux.Refuse(mux.CodeRefused, "connection refused by 127.0.0.1:9"))
		}
	})
	logs := &syncBuffer{}
	addr, _ := run(t, ts, client.Config{Username: "alice", Password: "secret", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(request))
	got, err := io.ReadAll(c)
	if len(got) != 0 || (err != nil && !isReset(err)) {
		t.Fatalf("read %q, %v from a refused forward; want the connection closed", got, err)
	}
	want := `msg="forward refused" local=` + addr
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), `err="connection refused by 127.0.0.1:9"`) {
		if time.Now().After(deadline) {
			t.Fatalf("log has no line %s ... err=\"connection refused by 127.0.0.1:9\":\n%s", want, logs.String())
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
