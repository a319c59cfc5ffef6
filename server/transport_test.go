package server_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/burrowtun/burrow/httpconn"
	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
)

// cuttable is an HTTP client whose connections the test can cut, and
// whose later dials then fail: a client that vanished.
type cuttable struct {
	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

func (c *cuttable) client(base *http.Client) *http.Client {
	tr := base.Transport.(*http.Transport).Clone()
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.cut {
			return nil, errors.New("cut")
		}
		conn, err := dial(ctx, network, addr)
		if err == nil {
			c.conns = append(c.conns, conn)
		}
		return conn, err
	}
	return &http.Client{Transport: tr}
}

func (c *cuttable) cutAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
	for _, conn := range c.conns {
		conn.Close()
	}
}

// dialHTTP opens a session over an HTTP transport of the given mode.
func (f *fixture) dialHTTP(t *testing.T, hc *http.Client, mode httpconn.Mode, user, password string) (*mux.Session, error) {
	t.Helper()
	h := http.Header{}
	(&http.Request{Header: h}).SetBasicAuth(user, password)
	conn, _, err := httpconn.Dial(t.Context(), "https"+strings.TrimPrefix(f.url, "wss")+"/", mode,
		&httpconn.DialOptions{HTTPClient: hc, Header: h, Protocol: mux.Subprotocol})
	if err != nil {
		var re *httpconn.ResponseError
		if errors.As(err, &re) {
			return nil, mux.Refusal(re.Response)
		}
		return nil, err
	}
	return mux.Client(conn, nil)
}

// TestHTTPTransports: a session runs over each HTTP transport as over a
// WebSocket, behind the same login, and the server says which carries it.
func TestHTTPTransports(t *testing.T) {
	f := newFixture(t, server.Config{}, ".*")
	echo := echoTarget(t)
	for _, mode := range []httpconn.Mode{httpconn.Stream, httpconn.Poll} {
		t.Run(string(mode), func(t *testing.T) {
			_, err := f.dialHTTP(t, f.http.Client(), mode, "alice", "wrong")
			var he *mux.HandshakeError
			if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
				t.Fatalf("wrong password over %s = %v, want 401", mode, err)
			}
			sess, err := f.dialHTTP(t, f.http.Client(), mode, "alice", "alice-secret")
			if err != nil {
				t.Fatalf("dial over %s: %v", mode, err)
			}
			defer sess.Close()
			st, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: echo}, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			msg := []byte("over " + string(mode))
			st.Write(msg)
			got := make([]byte, len(msg))
			st.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := st.Read(got); err != nil || string(got) != string(msg) {
				t.Fatalf("echo over %s: %q, %v", mode, got, err)
			}
			if !strings.Contains(f.logs.String(), "transport="+string(mode)) {
				t.Errorf("the server did not log the session's transport:\n%s", f.logs)
			}
		})
	}
}

// TestAbandonedPollExpires: a polling session whose client vanished
// without a word ends at the expiry, and the server keeps nothing of it.
func TestAbandonedPollExpires(t *testing.T) {
	f := newFixture(t, server.Config{HTTP: httpconn.ServerConfig{Hold: 100 * time.Millisecond, Expiry: 500 * time.Millisecond},
		Mux: &mux.Config{KeepAliveInterval: time.Hour}}, ".*")
	var c cuttable
	sess, err := f.dialHTTP(t, c.client(f.http.Client()), httpconn.Poll, "bob", "bob-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	waitFor(t, 5*time.Second, "the session to start", func() bool { return f.srv.Sessions() == 1 })
	c.cutAll()
	waitFor(t, 10*time.Second, "the abandoned session to end", func() bool { return f.srv.Sessions() == 0 })
}

// TestUnknownTokensAreLimited: requests naming connections the server
// does not know cost what wrong passwords do: after the limit, 429.
func TestUnknownTokensAreLimited(t *testing.T) {
	f := newFixture(t, server.Config{LoginFailures: 3, LoginWindow: time.Minute}, ".*")
	statuses := map[int]int{}
	for range 6 {
		req, _ := http.NewRequest(http.MethodPost, "https"+strings.TrimPrefix(f.url, "wss")+"/", nil)
		req.Header.Set(httpconn.SessionHeader, "AAAAAAAAAAAAAAAAAAAAAA")
		resp, err := f.http.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses[resp.StatusCode]++
	}
	if statuses[http.StatusNotFound] != 3 || statuses[http.StatusTooManyRequests] != 3 {
		t.Fatalf("six guessed tokens with a limit of three: %v, want three 404 then three 429", statuses)
	}
	if _, err := f.dialHTTP(t, f.http.Client(), httpconn.Poll, "bob", "bob-secret"); err == nil {
		t.Fatal("a login from the same source went through the limit")
	}
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
