package server_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	srv  *server.Server
	http *httptest.Server
	logs *syncBuffer
	url  string
}

// newFixture serves a Server with users alice (allowed allowAlice) and bob
// (allowed anything) over TLS on loopback.
func newFixture(t *testing.T, cfg server.Config, allowAlice ...string) *fixture {
	t.Helper()
	return newFixtureBehind(t, cfg, nil, allowAlice...)
}

// newFixtureBehind is newFixture with the server behind front (nil: none),
// a handler in the place of a proxy between client and server.
func newFixtureBehind(t *testing.T, cfg server.Config, front func(http.Handler) http.Handler, allowAlice ...string) *fixture {
	t.Helper()
	path := t.TempDir() + "/users.json"
	if err := server.AddUser(path, "alice", "alice-secret", allowAlice); err != nil {
		t.Fatal(err)
	}
	if err := server.AddUser(path, "bob", "bob-secret", []string{".*"}); err != nil {
		t.Fatal(err)
	}
	users, err := server.LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg.Auth = users
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = srv
	if front != nil {
		h = front(srv)
	}
	hs := httptest.NewTLSServer(h)
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
	})
	return &fixture{srv: srv, http: hs, logs: logs, url: "wss" + strings.TrimPrefix(hs.URL, "https")}
}

func (f *fixture) dial(t *testing.T, user, password string) (*mux.Session, error) {
	t.Helper()
	h := http.Header{}
	r := http.Request{Header: h}
	r.SetBasicAuth(user, password)
	return mux.Dial(t.Context(), f.url+"/", &mux.DialOptions{HTTPClient: f.http.Client(), Header: h})
}

// echoTarget listens on loopback and echoes each connection until EOF.
func echoTarget(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				c.Close()
			}()
		}
	}()
	return l.Addr().String()
}

func TestForwardEchoesAndHalfCloses(t *testing.T) {
	f := newFixture(t, server.Config{}, ".*")
	target := echoTarget(t)
	sess, err := f.dial(t, "alice", "alice-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	st, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: target}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	go func() {
		st.Write(payload)
		st.Close() // half-close: the target sees EOF and closes its side
	}()
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatalf("reading echo: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo differs: got %d bytes, want %d", len(got), len(payload))
	}
	if f.srv.Sessions() != 1 {
		t.Errorf("Sessions() = %d, want 1", f.srv.Sessions())
	}
}

func TestStreamRefusals(t *testing.T) {
	f := newFixture(t, server.Config{DialTimeout: 2 * time.Second}, `127\.0\.0\.1:1`)
	target := echoTarget(t)
	sess, err := f.dial(t, "alice", "alice-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	tests := []struct {
		name, target, want string
	}{
		{"acl denied", target, "not allowed for user alice"},
		{"connection refused", "127.0.0.1:1", "connection refused by 127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: tt.target}, 5*time.Second)
			var re *mux.RemoteError
			if !errors.As(err, &re) || !strings.Contains(re.Message, tt.want) {
				t.Fatalf("Open(%s) = %v, want a remote error containing %q", tt.target, err, tt.want)
			}
		})
	}
	// An unknown stream kind is refused on its stream only.
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	mux.WriteHeader(st, mux.Header{Kind: 99, Target: "x"})
	if err := mux.ReadReply(st); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("unknown kind: reply %v, want 'not supported'", err)
	}
	if sess.IsClosed() {
		t.Fatal("session closed after refused streams; it must stay up")
	}
	if !strings.Contains(f.logs.String(), "stream refused") {
		t.Errorf("server did not log the refusals:\n%s", f.logs)
	}
}

func TestLogin(t *testing.T) {
	f := newFixture(t, server.Config{LoginFailures: 3, LoginWindow: time.Minute}, ".*")
	for _, tc := range []struct{ user, pass string }{{"alice", "wrong"}, {"nobody", "alice-secret"}} {
		_, err := f.dial(t, tc.user, tc.pass)
		var he *mux.HandshakeError
		if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
			t.Fatalf("dial as %s/%s: %v, want HTTP 401", tc.user, tc.pass, err)
		}
	}
	logs := f.logs.String()
	if !strings.Contains(logs, `msg="login failed" user=alice`) {
		t.Errorf("failed login not logged with the user name:\n%s", logs)
	}
	if strings.Contains(logs, "wrong") || strings.Contains(logs, "alice-secret") {
		t.Errorf("a password appears in the log:\n%s", logs)
	}
	// The third failure from this address trips the limiter: even the
	// right password is answered 429 with Retry-After until the window ends.
	f.dial(t, "alice", "wrong-again")
	_, err := f.dial(t, "bob", "bob-secret")
	var he *mux.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusTooManyRequests || he.RetryAfter <= 0 {
		t.Fatalf("dial after 3 failures: %v, want HTTP 429 with Retry-After", err)
	}
}

// A valid login does not forgive its address's failures: one good
// account must not let an address keep guessing at others.
func TestLoginSuccessKeepsSourceFailures(t *testing.T) {
	f := newFixture(t, server.Config{LoginFailures: 3, LoginWindow: time.Minute}, ".*")
	// Each guess at another name, so the per-user limit stays out of it.
	f.dial(t, "alice", "guess")
	f.dial(t, "carol", "guess")
	sess, err := f.dial(t, "bob", "bob-secret")
	if err != nil {
		t.Fatalf("bob's good login: %v", err)
	}
	sess.Close()
	f.dial(t, "dave", "guess")
	_, err = f.dial(t, "erin", "guess")
	var he *mux.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth guess after a good login in between: %v, want HTTP 429", err)
	}
}

func TestNotTunnelRequests(t *testing.T) {
	f := newFixture(t, server.Config{Path: "/tunnel"}, ".*")
	for _, path := range []string{"/", "/tunnel", "/other"} {
		resp, err := f.http.Client().Get(f.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
		if bytes.Contains(bytes.ToLower(body), []byte("burrow")) || resp.Header.Get("Server") != "" {
			t.Errorf("GET %s: response names the software: %q %v", path, body, resp.Header)
		}
	}
	// An upgrade to another path is not the tunnel either.
	h := http.Header{}
	r := http.Request{Header: h}
	r.SetBasicAuth("bob", "bob-secret")
	_, err := mux.Dial(t.Context(), f.url+"/other", &mux.DialOptions{HTTPClient: f.http.Client(), Header: h})
	var he *mux.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusNotFound {
		t.Fatalf("upgrade on /other: %v, want 404", err)
	}
}

func TestCloseEndsSessions(t *testing.T) {
	f := newFixture(t, server.Config{}, ".*")
	sess, err := f.dial(t, "bob", "bob-secret")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		f.srv.Close()
		close(done)
	}()
	select {
	case <-sess.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("client session still open 10s after server Close")
	}
	<-done
	if n := f.srv.Sessions(); n != 0 {
		t.Fatalf("Sessions() = %d after Close", n)
	}
	if _, err := f.dial(t, "bob", "bob-secret"); err == nil {
		t.Fatal("a session was accepted after Close")
	}
}

func TestSafeTargetDefaults(t *testing.T) {
	admin := echoTarget(t) // stands in for the admin listener
	ap := netip.MustParseAddrPort(admin)
	f := newFixture(t, server.Config{Forbidden: []netip.AddrPort{ap}, DialTimeout: 2 * time.Second}, ".*")
	sess, err := f.dial(t, "alice", "alice-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for _, tc := range []struct{ target, want string }{
		{"169.254.169.254:80", "link-local or cloud metadata"},
		{"[fd00:ec2::254]:80", "link-local or cloud metadata"},
		{"[fe80::1]:22", "link-local or cloud metadata"},
		{admin, "admin listener"},
		{"localhost:" + strconv.Itoa(int(ap.Port())), "admin listener"},
	} {
		_, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: tc.target}, 5*time.Second)
		var re *mux.RemoteError
		if !errors.As(err, &re) || re.Code != mux.CodeDenied || !strings.Contains(re.Message, tc.want) {
			t.Errorf("Open(%s) = %v, want a denial mentioning %q", tc.target, err, tc.want)
		}
	}
}

func TestSessionAndStreamLimits(t *testing.T) {
	f := newFixture(t, server.Config{MaxSessionsPerUser: 1, MaxStreamsPerSession: 2}, ".*")
	target := echoTarget(t)
	first, err := f.dial(t, "alice", "alice-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = f.dial(t, "alice", "alice-secret")
	var he *mux.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable || !strings.Contains(he.Message, "maximum of 1 sessions") {
		t.Fatalf("second session of alice: %v, want 503 naming the limit", err)
	}
	if other, err := f.dial(t, "bob", "bob-secret"); err != nil {
		t.Fatalf("bob's session was refused by alice's limit: %v", err)
	} else {
		other.Close()
	}
	var open []*mux.Stream
	for range 2 {
		st, err := mux.Open(first, mux.Header{Kind: mux.KindTCP, Target: target}, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, st)
	}
	_, err = mux.Open(first, mux.Header{Kind: mux.KindTCP, Target: target}, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "too many streams") {
		t.Fatalf("third stream: %v, want the stream limit", err)
	}
	open[0].Close()
	io.ReadAll(open[0])
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := mux.Open(first, mux.Header{Kind: mux.KindTCP, Target: target}, 5*time.Second)
		if err == nil {
			st.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a stream slot did not free up after one closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStreamLimitCountsHeaderlessStreams checks that a stream counts
// against MaxStreamsPerSession from the moment it is accepted: streams
// that never send their header may not hold more than the limit between
// them.
func TestStreamLimitCountsHeaderlessStreams(t *testing.T) {
	f := newFixture(t, server.Config{MaxStreamsPerSession: 2, HeaderTimeout: time.Minute}, ".*")
	target := echoTarget(t)
	sess, err := f.dial(t, "alice", "alice-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for range 2 {
		st, err := sess.OpenStream() // and no header
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
	}
	_, err = mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: target}, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "too many streams") {
		t.Fatalf("a stream beside 2 headerless ones: %v, want the stream limit of 2", err)
	}
}
