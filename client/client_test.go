package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/burrowtun/burrow/client"
	"github.com/burrowtun/burrow/mux"
)

// tunnelServer is a minimal server end for the client's tests: it accepts
// sessions and answers every TCP stream by echoing it (or as handle says),
// or refuses the upgrade with status when status is non-zero.
type tunnelServer struct {
	*httptest.Server
	status   atomic.Int32
	sessions atomic.Int32
	mu       sync.Mutex
	live     []*mux.Session
}

func newTunnelServer(t *testing.T) *tunnelServer { return newTunnelServerWith(t, nil) }

// newTunnelServerWith starts a tunnelServer whose streams are served by
// handle, which is given the stream and the number of its session (1 for
// the first); nil means echo.
func newTunnelServerWith(t *testing.T, handle func(st *mux.Stream, session int32)) *tunnelServer {
	if handle == nil {
		handle = echoStream
	}
	ts := &tunnelServer{}
	var wg sync.WaitGroup
	ts.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := ts.status.Load(); s != 0 {
			http.Error(w, "refused by test", int(s))
			return
		}
		if u, p, _ := r.BasicAuth(); u != "alice" || p != "secret" {
			http.Error(w, "invalid username or password", http.StatusUnauthorized)
			return
		}
		sess, err := mux.Accept(w, r, nil)
		if err != nil {
			return
		}
		n := ts.sessions.Add(1)
		ts.mu.Lock()
		ts.live = append(ts.live, sess)
		ts.mu.Unlock()
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer st.Close()
				st.SetDeadline(time.Now().Add(10 * time.Second))
				handle(st, n)
			}()
		}
	}))
	t.Cleanup(func() {
		ts.dropSessions()
		ts.Close()
		wg.Wait()
	})
	return ts
}

// echoStream accepts any stream and echoes it.
func echoStream(st *mux.Stream, _ int32) {
	if _, err := mux.ReadHeader(st); err != nil {
		return
	}
	mux.WriteReply(st, nil)
	io.Copy(st, st)
}

func (ts *tunnelServer) dropSessions() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, s := range ts.live {
		s.Close()
	}
	ts.live = nil
}

func (ts *tunnelServer) url() string { return "wss" + strings.TrimPrefix(ts.URL, "https") }

// run starts a client with one forward on 127.0.0.1:0 (before cfg's own
// remotes) and returns the bound address and the channel Run's result
// arrives on.
func run(t *testing.T, ts *tunnelServer, cfg client.Config) (string, <-chan error) {
	t.Helper()
	r, err := client.ParseRemote("127.0.0.1:0:127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	cfg.URL = ts.url()
	cfg.TLS = ts.Client().Transport.(*http.Transport).TLSClientConfig
	cfg.Remotes = append([]client.Remote{r}, cfg.Remotes...)
	addr := make(chan string, 1)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	cfg.Listening = func(_ client.Remote, a net.Addr) { addr <- a.String() }
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	select {
	case a := <-addr:
		return a, done
	case err := <-done:
		t.Fatalf("Run returned before listening: %v", err)
	}
	return "", nil
}

func roundTrip(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("hello through the tunnel")
	c.Write(msg)
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through forward: %q, %v", got, err)
	}
}

func TestForwardAndReconnect(t *testing.T) {
	ts := newTunnelServer(t)
	addr, _ := run(t, ts, client.Config{Username: "alice", Password: "secret", MaxRetryInterval: 200 * time.Millisecond})
	roundTrip(t, addr)
	ts.dropSessions()
	// The listener stays bound; the next connection waits for the new session.
	roundTrip(t, addr)
	if n := ts.sessions.Load(); n != 2 {
		t.Fatalf("server saw %d sessions, want 2 (one reconnect)", n)
	}
}

func TestRejectedCredentialsAreNotRetried(t *testing.T) {
	ts := newTunnelServer(t)
	_, done := run(t, ts, client.Config{Username: "alice", Password: "wrong", MaxRetryInterval: 50 * time.Millisecond})
	select {
	case err := <-done:
		if !errors.Is(err, client.ErrUnauthorized) || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), `"alice"`) {
			t.Fatalf("Run: %v, want credentials rejected for alice (401)", err)
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Fatalf("error shows the password: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client still retrying 10s after a 401")
	}
}

func TestRetryCountGivesUp(t *testing.T) {
	ts := newTunnelServer(t)
	ts.status.Store(http.StatusServiceUnavailable)
	_, done := run(t, ts, client.Config{Username: "alice", Password: "secret", MaxRetryInterval: 20 * time.Millisecond, MaxRetryCount: 2})
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "giving up after 3") || !strings.Contains(err.Error(), "503") {
			t.Fatalf("Run: %v, want giving up after 3 attempts with the 503", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client did not give up")
	}
}

func TestListenFailureIsClear(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := client.ParseRemote(l.Addr().String() + ":127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: "wss://127.0.0.1:1", Remotes: []client.Remote{r}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "cannot listen on "+l.Addr().String()) {
		t.Fatalf("Run with a taken port: %v", err)
	}
}
