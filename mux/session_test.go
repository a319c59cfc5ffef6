package mux

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
)

// transport is one way of carrying a session.
type transport struct {
	name string
	tls  bool
	// batch batches writes under TLS too, as the burrow binaries do:
	// CoalescingListener on the server, CoalesceWrites on the client.
	batch bool
}

// transports lists the carriers every session test runs over, as yamux's
// session tests run one body over several connection types.
var transports = []transport{
	{name: "ws"},
	{name: "wss", tls: true},
	{name: "wss+batch", tls: true, batch: true},
}

// forEachTransport runs body once per transport, as parallel subtests.
func forEachTransport(t *testing.T, body func(t *testing.T, tr transport)) {
	t.Helper()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			body(t, tr)
		})
	}
}

// startHTTPTest starts srv over tr and returns a client for it; both are
// shut down when the test ends.
func startHTTPTest(tb testing.TB, srv *httptest.Server, tr transport) *http.Client {
	tb.Helper()
	if tr.batch {
		srv.Listener = CoalescingListener(srv.Listener, 0)
	}
	if tr.tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	client := srv.Client()
	if tr.batch {
		t := client.Transport.(*http.Transport).Clone()
		dial := t.DialContext
		t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return CoalesceWrites(c, 0), nil
		}
		client = &http.Client{Transport: t}
	}
	tb.Cleanup(func() {
		srv.Close()
		client.CloseIdleConnections()
	})
	return client
}

// testTimeout bounds every wait in these tests so that a bug fails a test
// instead of hanging the run. It is no performance bound: make test runs
// this package under the race detector beside the integration suite on
// two cores, where 50 echoed streams of up to 1 MiB took over 20 s.
const testTimeout = 60 * time.Second

type acceptResult struct {
	sess *Session
	err  error
}

// tunnelServer is an httptest server whose handler does what the server
// package does at its core: mux.Accept, then hand the session on.
type tunnelServer struct {
	*httptest.Server
	client   *http.Client
	accepted chan acceptResult
}

type serverOptions struct {
	tr  transport
	cfg *Config
	// wrap, when set, wraps the server's listener (to count its writes).
	wrap func(net.Listener) net.Listener
}

func startTunnelServer(tb testing.TB, o serverOptions) *tunnelServer {
	tb.Helper()
	ts := &tunnelServer{accepted: make(chan acceptResult, 8)}
	ts.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := Accept(w, r, o.cfg)
		ts.accepted <- acceptResult{sess, err}
	}))
	if o.wrap != nil {
		ts.Listener = o.wrap(ts.Listener)
	}
	tb.Cleanup(func() {
		for {
			select {
			case a := <-ts.accepted:
				if a.sess != nil {
					a.sess.Close()
				}
			default:
				return
			}
		}
	})
	ts.client = startHTTPTest(tb, ts.Server, o.tr)
	return ts
}

// wsURL is the tunnel URL of ts: ws:// or wss:// to its address.
func (ts *tunnelServer) wsURL() string {
	return "ws" + strings.TrimPrefix(ts.URL, "http") + "/tunnel"
}

// next returns what the handler's next Accept call returned.
func (ts *tunnelServer) next(tb testing.TB) acceptResult {
	tb.Helper()
	select {
	case a := <-ts.accepted:
		return a
	case <-time.After(testTimeout):
		tb.Fatal("the server never ran Accept")
		return acceptResult{}
	}
}

// dial opens a session to ts and returns both of its ends. Both are closed
// when the test ends.
func (ts *tunnelServer) dial(tb testing.TB, cfg *Config) (client, server *Session) {
	tb.Helper()
	return ts.dialURL(tb, ts.wsURL(), cfg)
}

// dialURL is dial through another address, such as a proxy in front of ts.
func (ts *tunnelServer) dialURL(tb testing.TB, url string, cfg *Config) (client, server *Session) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	client, err := Dial(ctx, url, &DialOptions{HTTPClient: ts.client, Config: cfg})
	if err != nil {
		tb.Fatalf("Dial %s: %v", url, err)
	}
	tb.Cleanup(func() { client.Close() })
	a := ts.next(tb)
	if a.err != nil {
		tb.Fatalf("Accept: %v", a.err)
	}
	tb.Cleanup(func() { a.sess.Close() })
	return client, a.sess
}

// serveStreams accepts streams on sess and runs handle on each in its own
// goroutine until sess closes. When the test ends it closes sess and waits
// for every handler.
func serveStreams(tb testing.TB, sess *Session, handle func(*Stream)) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer st.Close()
				handle(st)
			})
		}
	})
	tb.Cleanup(func() {
		sess.Close()
		wg.Wait()
	})
}

// echo copies a stream back to its opener until the opener half-closes,
// then half-closes too.
func echo(st *Stream) {
	st.SetDeadline(time.Now().Add(testTimeout))
	io.Copy(st, st)
}

// echoOnce sends payload on a new stream, half-closes, and checks that the
// same bytes come back.
func echoOnce(sess *Session, payload []byte) error {
	st, err := sess.OpenStream()
	if err != nil {
		return fmt.Errorf("opening stream: %w", err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(testTimeout))
	want := sha256.Sum256(payload)

	writeErr := make(chan error, 1)
	go func() {
		_, err := st.Write(payload)
		if err == nil {
			err = st.Close() // half-close: the echo side sees EOF
		}
		writeErr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, st)
	if werr := <-writeErr; werr != nil {
		return fmt.Errorf("stream %d: writing %d bytes: %w", st.StreamID(), len(payload), werr)
	}
	if err != nil {
		return fmt.Errorf("stream %d: reading the echo: %w", st.StreamID(), err)
	}
	if n != int64(len(payload)) || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("stream %d: sent %d bytes with sha256 %x, got back %d bytes with sha256 %x",
			st.StreamID(), len(payload), want, n, h.Sum(nil))
	}
	return nil
}

func TestSessionEcho(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		// 50 streams of up to 1 MiB under the race detector on two
		// cores can wait on the send queue longer than the default 15 s
		// write timeout; the test is about data, not about that limit.
		patient := &Config{KeepAliveTimeout: time.Minute}
		ts := startTunnelServer(t, serverOptions{tr: tr, cfg: patient})
		client, server := ts.dial(t, patient)
		serveStreams(t, server, echo)

		var seed [32]byte
		binary.LittleEndian.PutUint64(seed[:], rand.Uint64())
		t.Logf("payload seed %x", seed[:8])
		src := rand.NewChaCha8(seed)
		rng := rand.New(src)
		const streams = 50
		payloads := make([][]byte, streams)
		for i := range payloads {
			size := rng.IntN(1<<20) + 1
			switch i {
			case 0:
				size = 0
			case 1:
				size = 1 << 20
			}
			payloads[i] = make([]byte, size)
			src.Read(payloads[i])
		}

		errc := make(chan error, streams)
		for _, p := range payloads {
			go func() { errc <- echoOnce(client, p) }()
		}
		for range streams {
			if err := <-errc; err != nil {
				t.Error(err)
			}
		}
	})
}

// TestStreamHalfClose checks that Close on a stream is a half-close through
// our connection: the peer reads EOF after the data and can still answer.
func TestStreamHalfClose(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		for _, opener := range []string{"client", "server"} {
			t.Run("opened by "+opener, func(t *testing.T) {
				ts := startTunnelServer(t, serverOptions{tr: tr})
				client, server := ts.dial(t, nil)
				open, accept := client, server
				if opener == "server" {
					open, accept = server, client
				}

				type answer struct {
					got []byte
					err error
				}
				answered := make(chan answer, 1)
				go func() {
					st, err := accept.AcceptStream()
					if err != nil {
						answered <- answer{err: err}
						return
					}
					defer st.Close()
					st.SetDeadline(time.Now().Add(testTimeout))
					got, err := io.ReadAll(st) // returns at the opener's FIN
					if err == nil {
						_, err = st.Write([]byte("response to " + string(got)))
					}
					answered <- answer{got, err}
				}()

				st, err := open.OpenStream()
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				st.SetDeadline(time.Now().Add(testTimeout))
				if _, err := st.Write([]byte("request")); err != nil {
					t.Fatal(err)
				}
				if err := st.Close(); err != nil {
					t.Fatalf("half-close: %v", err)
				}
				if _, err := st.Write([]byte("more")); err == nil {
					t.Error("Write after Close succeeded; the write side should be shut")
				}
				got, err := io.ReadAll(st)
				if err != nil {
					t.Fatalf("reading after half-close: %v", err)
				}
				a := <-answered
				if a.err != nil {
					t.Fatalf("peer: %v", a.err)
				}
				if string(a.got) != "request" {
					t.Errorf("peer read %q before EOF, want %q", a.got, "request")
				}
				if string(got) != "response to request" {
					t.Errorf("opener read %q after its half-close, want %q", got, "response to request")
				}
			})
		}
	})
}

// TestCloseDelivers checks that closing a session right after writing
// loses nothing: what a stream wrote before the session was closed reaches
// the peer, followed by EOF.
func TestCloseDelivers(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := startTunnelServer(t, serverOptions{tr: tr})
		client, server := ts.dial(t, nil)
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte{0}); err != nil { // make the stream known to the server
			t.Fatal(err)
		}
		peer, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		peer.SetDeadline(time.Now().Add(testTimeout))

		// Less than the initial window, so no write waits for the peer.
		payload := bytes.Repeat([]byte("last words "), 10000)
		if _, err := st.Write(payload); err != nil {
			t.Fatal(err)
		}
		st.Close()
		client.Close()

		got, err := io.ReadAll(peer)
		if err != nil {
			t.Fatalf("server read %d bytes, then: %v", len(got), err)
		}
		if len(got) != 1+len(payload) {
			t.Fatalf("server read %d bytes, want %d: the session lost what was written before Close", len(got), 1+len(payload))
		}
	})
}

func TestAcceptSubprotocol(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		protocols []string
		wantOK    bool
	}{
		{"none offered", nil, false},
		{"other version", []string{"burrow.v2"}, false},
		{"prefix only", []string{"burrow"}, false},
		{"offered among others", []string{"burrow.v2", Subprotocol}, true},
		{"offered alone", []string{Subprotocol}, true},
	}
	forEachTransport(t, func(t *testing.T, tr transport) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ts := startTunnelServer(t, serverOptions{tr: tr})
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				defer cancel()
				ws, resp, err := websocket.Dial(ctx, ts.wsURL(), &websocket.DialOptions{
					HTTPClient:   ts.client,
					Subprotocols: tt.protocols,
				})
				a := ts.next(t)
				if a.sess != nil {
					defer a.sess.Close()
				}
				if tt.wantOK {
					if err != nil {
						t.Fatalf("Dial: %v", err)
					}
					defer ws.CloseNow()
					if a.err != nil {
						t.Fatalf("Accept: %v", a.err)
					}
					if ws.Subprotocol() != Subprotocol {
						t.Fatalf("negotiated %q, want %q", ws.Subprotocol(), Subprotocol)
					}
					return
				}
				if err == nil {
					ws.CloseNow()
					t.Fatal("the upgrade succeeded without the wire version")
				}
				if !errors.Is(a.err, ErrWrongVersion) {
					t.Errorf("Accept = %v, want ErrWrongVersion", a.err)
				}
				if resp == nil || resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("response = %v, want HTTP 400", resp)
				}
				body, _ := io.ReadAll(resp.Body)
				if !strings.Contains(string(body), "wire version") || !strings.Contains(string(body), Subprotocol) {
					t.Errorf("400 body %q should name the wire version %s", body, Subprotocol)
				}
			})
		}
	})
}

// TestDialServerIgnoresSubprotocol covers a WebSocket server that upgrades
// without agreeing to the subprotocol (not a burrow server, or a very old
// one): Dial must refuse it.
func TestDialServerIgnoresSubprotocol(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer ws.CloseNow()
			// Read until the client closes, which answers its close frame.
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			for {
				if _, _, err := ws.Read(ctx); err != nil {
					return
				}
			}
		}))
		client := startHTTPTest(t, srv, tr)

		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		sess, err := Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &DialOptions{HTTPClient: client})
		if err == nil {
			sess.Close()
			t.Fatal("Dial accepted a server that did not agree to the wire version")
		}
		if !errors.Is(err, ErrNotNegotiated) {
			t.Errorf("Dial = %v, want ErrNotNegotiated", err)
		}
		if !strings.Contains(err.Error(), Subprotocol) {
			t.Errorf("error %q should name the wire version %s", err, Subprotocol)
		}
	})
}

func TestDialHandshakeError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		retryAfter string
		body       string
		want       HandshakeError
		wantText   string
	}{
		{
			name:       "bad credentials",
			status:     http.StatusUnauthorized,
			retryAfter: "30",
			body:       "server rejected credentials for user alice\nsecond line\n",
			want:       HandshakeError{StatusCode: 401, Message: "server rejected credentials for user alice", RetryAfter: 30 * time.Second},
			wantText:   "server refused the tunnel (HTTP 401): server rejected credentials for user alice",
		},
		{
			name:     "no body",
			status:   http.StatusForbidden,
			want:     HandshakeError{StatusCode: 403},
			wantText: "server refused the tunnel (HTTP 403)",
		},
		{
			name:       "padded body",
			status:     http.StatusServiceUnavailable,
			retryAfter: "120",
			body:       "  \r\n  draining for upgrade\r\nbye",
			want:       HandshakeError{StatusCode: 503, Message: "draining for upgrade", RetryAfter: 2 * time.Minute},
		},
		{
			name:       "zero retry-after",
			status:     http.StatusTooManyRequests,
			retryAfter: "0",
			body:       "slow down",
			want:       HandshakeError{StatusCode: 429, Message: "slow down"},
		},
	}
	forEachTransport(t, func(t *testing.T, tr transport) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					w.WriteHeader(tt.status)
					io.WriteString(w, tt.body)
				}))
				client := startHTTPTest(t, srv, tr)
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				defer cancel()
				sess, err := Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &DialOptions{HTTPClient: client})
				if err == nil {
					sess.Close()
					t.Fatal("Dial succeeded against a refusing server")
				}
				var he *HandshakeError
				if !errors.As(err, &he) {
					t.Fatalf("Dial = %v (%T), want a *HandshakeError", err, err)
				}
				if *he != tt.want {
					t.Errorf("HandshakeError = %+v, want %+v", *he, tt.want)
				}
				if tt.wantText != "" && err.Error() != tt.wantText {
					t.Errorf("Error() = %q, want %q", err, tt.wantText)
				}
			})
		}
	})
}

// TestDialHandshakeErrorLongBody checks that a refusal's body is read only
// up to a bound, however much the server sends.
func TestDialHandshakeErrorLongBody(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, strings.Repeat("x", 1<<20))
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, err := Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &DialOptions{HTTPClient: srv.Client()})
	var he *HandshakeError
	if !errors.As(err, &he) {
		t.Fatalf("Dial = %v, want a *HandshakeError", err)
	}
	if he.StatusCode != http.StatusBadGateway || len(he.Message) == 0 || len(he.Message) > 1024 {
		t.Fatalf("HandshakeError status %d with a %d-byte message; want 502 and a bounded message", he.StatusCode, len(he.Message))
	}
}

// TestDialSendsHeaderAndHost checks that DialOptions.Header and Host reach
// the server with the upgrade request.
func TestDialSendsHeaderAndHost(t *testing.T) {
	t.Parallel()
	got := make(chan http.Header, 1)
	hosts := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		hosts <- r.Host
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, err := Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/tunnel", &DialOptions{
		HTTPClient: srv.Client(),
		Header:     http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}},
		Host:       "tunnel.example",
	})
	if err == nil {
		t.Fatal("Dial succeeded against a refusing server")
	}
	h := <-got
	if h.Get("Authorization") != "Basic YWxpY2U6c2VjcmV0" {
		t.Errorf("Authorization = %q", h.Get("Authorization"))
	}
	if h.Get("Sec-WebSocket-Protocol") != Subprotocol {
		t.Errorf("Sec-WebSocket-Protocol = %q, want %q", h.Get("Sec-WebSocket-Protocol"), Subprotocol)
	}
	if host := <-hosts; host != "tunnel.example" {
		t.Errorf("Host = %q, want tunnel.example", host)
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   *Config
		want Config // Logger is checked apart
	}{
		{"nil", nil, Config{
			StreamWindow: DefaultStreamWindow, KeepAliveInterval: DefaultKeepAliveInterval,
			KeepAliveTimeout: DefaultKeepAliveTimeout, AcceptBacklog: DefaultAcceptBacklog,
		}},
		{"zero", &Config{}, Config{
			StreamWindow: DefaultStreamWindow, KeepAliveInterval: DefaultKeepAliveInterval,
			KeepAliveTimeout: DefaultKeepAliveTimeout, AcceptBacklog: DefaultAcceptBacklog,
		}},
		{"set", &Config{StreamWindow: 1 << 20, KeepAliveInterval: time.Second, KeepAliveTimeout: 2 * time.Second, AcceptBacklog: 4},
			Config{StreamWindow: 1 << 20, KeepAliveInterval: time.Second, KeepAliveTimeout: 2 * time.Second, AcceptBacklog: 4}},
		{"negative", &Config{KeepAliveInterval: -1, KeepAliveTimeout: -1, AcceptBacklog: -1}, Config{
			StreamWindow: DefaultStreamWindow, KeepAliveInterval: DefaultKeepAliveInterval,
			KeepAliveTimeout: DefaultKeepAliveTimeout, AcceptBacklog: DefaultAcceptBacklog,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var before Config
			if tt.in != nil {
				before = *tt.in
			}
			got := tt.in.withDefaults()
			if got.Logger == nil {
				t.Error("withDefaults left Logger nil")
			}
			got.Logger = nil
			if got != tt.want {
				t.Errorf("withDefaults = %+v, want %+v", got, tt.want)
			}
			if tt.in != nil && *tt.in != before {
				t.Errorf("withDefaults changed the caller's Config to %+v", *tt.in)
			}
			y, err := tt.in.withDefaults().yamux()
			if err != nil {
				t.Fatalf("yamux config: %v", err)
			}
			if y.EnableKeepAlive || y.KeepAliveInterval != tt.want.KeepAliveInterval ||
				y.MaxStreamWindowSize != tt.want.StreamWindow || y.AcceptBacklog != tt.want.AcceptBacklog {
				t.Errorf("yamux config %+v does not follow %+v", y, tt.want)
			}
		})
	}
}

func TestConfigStreamWindowMinimum(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		window uint32
		ok     bool
	}{
		{1, false},
		{256<<10 - 1, false},
		{256 << 10, true},
		{DefaultStreamWindow, true},
	} {
		_, err := (&Config{StreamWindow: tt.window}).withDefaults().yamux()
		if (err == nil) != tt.ok {
			t.Errorf("window %d: err = %v, want ok = %v", tt.window, err, tt.ok)
		}
	}

	bad := &Config{StreamWindow: 1000}
	t.Run("Dial", func(t *testing.T) {
		t.Parallel()
		// Refused before any network traffic: nothing listens here.
		_, err := Dial(context.Background(), "ws://127.0.0.1:1/tunnel", &DialOptions{Config: bad})
		if err == nil || !strings.Contains(err.Error(), "stream window") {
			t.Fatalf("Dial = %v, want a stream window error", err)
		}
	})
	t.Run("Accept", func(t *testing.T) {
		t.Parallel()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/tunnel", nil)
		req.Header.Set("Sec-WebSocket-Protocol", Subprotocol)
		sess, err := Accept(rec, req, bad)
		if err == nil {
			sess.Close()
			t.Fatal("Accept succeeded with a window below the minimum")
		}
		if rec.Code != http.StatusInternalServerError {
			t.Errorf("Accept answered HTTP %d, want 500", rec.Code)
		}
		if strings.Contains(rec.Body.String(), "window") {
			t.Errorf("Accept told the client about its configuration: %q", rec.Body.String())
		}
	})
}

// TestKeepAliveSilentPeer freezes the network between client and server
// without closing it, as a dead NAT entry or a suspended laptop would, and
// checks that the client notices through keepalive.
//
// It does not run in parallel with other tests: with 200ms to answer a
// ping, a CPU starved by the race detector and the bulk tests would close
// the session before the freeze.
func TestKeepAliveSilentPeer(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := startTunnelServer(t, serverOptions{tr: tr})
		proxy := startFreezeProxy(t, ts.Listener.Addr().String())
		// Silence for a second ends the session: room for a CPU starved
		// by the race detector and the integration suite before the
		// freeze, and a bound well under the default's 30 s after it.
		cfg := &Config{KeepAliveInterval: 250 * time.Millisecond, KeepAliveTimeout: 750 * time.Millisecond}
		url := strings.Replace(ts.wsURL(), ts.Listener.Addr().String(), proxy.addr(), 1)
		client, server := ts.dialURL(t, url, cfg)
		serveStreams(t, server, echo)

		if err := echoOnce(client, []byte("alive")); err != nil {
			t.Fatalf("before the freeze: %v", err)
		}
		// Several keepalive rounds pass while the network works.
		time.Sleep(600 * time.Millisecond)
		select {
		case <-client.CloseChan():
			t.Fatal("the session closed while the network was working")
		default:
		}

		proxy.freeze()
		start := time.Now()
		select {
		case <-client.CloseChan():
			t.Logf("silent peer noticed after %v", time.Since(start).Round(time.Millisecond))
		case <-time.After(3 * time.Second):
			t.Fatalf("the client session was still open %v after the network froze (1 s of silence should end it)", time.Since(start))
		}
	})
}

// TestKeepAliveBusySlowLink uploads through a link far slower than the
// sender, so that each of the client's pings waits behind a second or more
// of queued data, with the same keepalive as TestKeepAliveSilentPeer: the
// session must survive, since the server keeps receiving data and the
// client keeps hearing the server's own pings.
func TestKeepAliveBusySlowLink(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		// Silence for a second ends the session. Without the rule that
		// any frame proves the peer alive, a ping queued behind 512 KiB
		// at 256 KiB/s waits two; with it, a loaded machine running this
		// beside the integration suite still has room (100 ms + 200 ms
		// was once exceeded there).
		cfg := &Config{KeepAliveInterval: 250 * time.Millisecond, KeepAliveTimeout: 750 * time.Millisecond}
		ts := startTunnelServer(t, serverOptions{tr: tr, cfg: cfg})
		const rate, size = 256 << 10, 512 << 10 // bytes a second client to server, bytes sent
		proxy := startSlowProxy(t, ts.Listener.Addr().String(), rate)
		url := strings.Replace(ts.wsURL(), ts.Listener.Addr().String(), proxy.addr(), 1)
		client, server := ts.dialURL(t, url, cfg)
		received := make(chan int64, 1)
		serveStreams(t, server, func(st *Stream) {
			st.SetDeadline(time.Now().Add(testTimeout))
			n, _ := io.Copy(io.Discard, st)
			received <- n
		})

		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		start := time.Now()
		if _, err := st.Write(make([]byte, size)); err != nil {
			t.Fatalf("write: %v", err)
		}
		st.Close()
		select {
		case n := <-received:
			if n != size {
				t.Fatalf("the server received %d bytes, want %d", n, size)
			}
			t.Logf("%d KiB through %d KiB/s in %v", size>>10, rate>>10, time.Since(start).Round(time.Millisecond))
		case <-client.CloseChan():
			t.Fatalf("the session closed %v into a transfer over a slow link", time.Since(start).Round(time.Millisecond))
		case <-time.After(testTimeout):
			t.Fatal("the transfer did not finish")
		}
		select {
		case <-client.CloseChan():
			t.Fatal("the session closed during the transfer")
		case <-server.CloseChan():
			t.Fatal("the server's session closed during the transfer")
		default:
		}
	})
}

// TestCloseSilentPeerMidMessage closes a session whose peer went silent
// halfway through a WebSocket message while its connection stays open (a
// frozen process, a blackholed path): Close must give up on the closing
// handshake within its bound, where coder/websocket alone waits 5 s, or,
// caught between two reads of a message, for as long as the connection
// stays open. Nothing is queued, so no drain time is allowed for.
func TestCloseSilentPeerMidMessage(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		cfg := &Config{KeepAliveInterval: time.Minute} // keepalive stays out of it
		ts := startTunnelServer(t, serverOptions{tr: tr, cfg: cfg})
		// 64 KiB/s: a message of up to 256 KiB takes seconds to arrive.
		proxy := startSlowProxy(t, ts.Listener.Addr().String(), 64<<10)
		url := strings.Replace(ts.wsURL(), ts.Listener.Addr().String(), proxy.addr(), 1)
		client, server := ts.dialURL(t, url, cfg)
		serveStreams(t, server, func(st *Stream) {
			st.SetDeadline(time.Now().Add(testTimeout))
			io.Copy(io.Discard, st)
		})
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		go st.Write(make([]byte, 1<<20)) // ends with the client session
		time.Sleep(500 * time.Millisecond)
		proxy.freeze()

		start := time.Now()
		server.Close()
		took := time.Since(start)
		t.Logf("Close took %v", took.Round(time.Millisecond))
		if bound := closeHandshakeTimeout + time.Second; took > bound {
			t.Errorf("Close of a session whose peer froze mid-message took %v, want at most %v", took, bound)
		}
	})
}

// freezeProxy forwards TCP connections to a target until frozen; frozen, it
// stops reading and forwarding in both directions but keeps every
// connection open. With upRate set it also forwards towards the target at
// most that many bytes a second.
type freezeProxy struct {
	ln     net.Listener
	target string
	upRate int

	mu     sync.Mutex
	cond   sync.Cond
	frozen bool
	closed bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startFreezeProxy(tb testing.TB, target string) *freezeProxy {
	return startSlowProxy(tb, target, 0)
}

// startSlowProxy is startFreezeProxy with upRate.
func startSlowProxy(tb testing.TB, target string, upRate int) *freezeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target, upRate: upRate}
	p.cond.L = &p.mu
	p.wg.Go(p.acceptLoop)
	tb.Cleanup(p.close)
	return p
}

func (p *freezeProxy) addr() string { return p.ln.Addr().String() }

func (p *freezeProxy) acceptLoop() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			down.Close()
			up.Close()
			return
		}
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		p.wg.Go(func() { p.pump(up, down, p.upRate) })
		p.wg.Go(func() { p.pump(down, up, 0) })
	}
}

// pump copies src to dst, holding still while the proxy is frozen, at
// most rate bytes a second unless rate is 0.
func (p *freezeProxy) pump(dst, src net.Conn, rate int) {
	buf := make([]byte, 32<<10)
	if rate > 0 {
		buf = buf[:min(len(buf), rate/20)] // pace in steps of 50 ms or less
	}
	start, sent := time.Now(), 0
	for {
		if !p.waitThawed() {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitThawed() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if rate > 0 {
				sent += n
				time.Sleep(time.Until(start.Add(time.Duration(sent) * time.Second / time.Duration(rate))))
			}
		}
		if err != nil {
			return
		}
	}
}

// waitThawed blocks while the proxy is frozen; it reports false once the
// proxy is closed.
func (p *freezeProxy) waitThawed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.frozen && !p.closed {
		p.cond.Wait()
	}
	return !p.closed
}

func (p *freezeProxy) freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

func (p *freezeProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	conns := p.conns
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
}

// TestOpen covers Open and ReadHeaderTimeout: an accepted stream, a
// refusal that arrives as a *RemoteError, and a peer that never answers.
func TestOpen(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		ts := startTunnelServer(t, serverOptions{tr: tr})
		client, server := ts.dial(t, nil)
		serveStreams(t, server, func(st *Stream) {
			h, err := ReadHeaderTimeout(st, testTimeout)
			if err != nil {
				return
			}
			switch h.Target {
			case "allowed:1":
				if WriteReply(st, nil) == nil {
					echo(st)
				}
			case "silent:1":
				io.Copy(io.Discard, st) // never answers
			default:
				WriteReply(st, fmt.Errorf("target %s is not allowed", h.Target))
			}
		})

		t.Run("accepted", func(t *testing.T) {
			st, err := Open(client, Header{Kind: KindTCP, Target: "allowed:1"}, testTimeout)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer st.Close()
			st.SetDeadline(time.Now().Add(testTimeout))
			if _, err := st.Write([]byte("hi")); err != nil {
				t.Fatal(err)
			}
			st.Close()
			got, err := io.ReadAll(st)
			if err != nil || string(got) != "hi" {
				t.Fatalf("echo = %q, %v; want %q", got, err, "hi")
			}
		})
		t.Run("refused", func(t *testing.T) {
			_, err := Open(client, Header{Kind: KindTCP, Target: "10.0.0.1:22"}, testTimeout)
			var re *RemoteError
			if !errors.As(err, &re) || re.Message != "target 10.0.0.1:22 is not allowed" {
				t.Fatalf("Open = %v, want *RemoteError %q", err, "target 10.0.0.1:22 is not allowed")
			}
		})
		t.Run("no reply", func(t *testing.T) {
			start := time.Now()
			_, err := Open(client, Header{Kind: KindTCP, Target: "silent:1"}, 200*time.Millisecond)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("Open = %v, want a timeout", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("Open took %v to time out after 200ms", d)
			}
		})
	})
}

// TestReadHeaderTimeout checks that a stream whose opener never sends a
// header is given up on.
func TestReadHeaderTimeout(t *testing.T) {
	t.Parallel()
	ts := startTunnelServer(t, serverOptions{tr: transport{}})
	client, server := ts.dial(t, nil)
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	peer, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	start := time.Now()
	_, err = ReadHeaderTimeout(peer, 100*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("ReadHeaderTimeout = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("ReadHeaderTimeout took %v to give up after 100ms", d)
	}
	// The deadline is cleared afterwards: a late header is still readable.
	if err := WriteHeader(st, Header{Kind: KindTCP, Target: "late:1"}); err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(peer)
	if err != nil || h.Target != "late:1" {
		t.Fatalf("ReadHeader after the timeout = %+v, %v", h, err)
	}
}

// Benchmarks. BenchmarkStreamThroughput and BenchmarkSmallWrites move data
// over one stream of a tunnel on TLS loopback; BenchmarkTLSBaseline moves
// the same data over a bare TLS loopback connection, so the cost of the
// tunnel reads off one run:
//
//	go test -run='^$' -bench=. -benchmem ./mux/

func BenchmarkStreamThroughput(b *testing.B) { benchmarkTunnels(b, 1<<20) }
func BenchmarkSmallWrites(b *testing.B)      { benchmarkTunnels(b, 64) }

// benchmarkTunnels runs benchmarkTunnel over TLS, with and without
// batching below TLS (the latter is how the burrow binaries run).
func benchmarkTunnels(b *testing.B, size int) {
	for _, tr := range transports {
		if tr.tls {
			b.Run(tr.name, func(b *testing.B) { benchmarkTunnel(b, tr, size) })
		}
	}
}

// BenchmarkSmallWritesStreams is BenchmarkSmallWrites on 16 streams at
// once, each writing its share of b.N 64-byte writes: the traffic of many
// interactive connections, whose frames queue behind each other.
func BenchmarkSmallWritesStreams(b *testing.B) {
	for _, tr := range transports {
		if tr.tls {
			b.Run(tr.name, func(b *testing.B) { benchmarkStreams(b, tr, 16, 64) })
		}
	}
}

func benchmarkStreams(b *testing.B, tr transport, streams, size int) {
	ts := startTunnelServer(b, serverOptions{tr: tr})
	client, server := ts.dial(b, nil)
	sts := make([]*Stream, streams)
	done := make(chan int64, streams)
	for i := range sts {
		st, peer := acceptedStream(b, client, server)
		defer peer.Close()
		go drain(peer, done)
		sts[i] = st
	}
	buf := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, st := range sts {
		n := b.N / streams
		if i < b.N%streams {
			n++
		}
		wg.Go(func() {
			for range n {
				if _, err := st.Write(buf); err != nil {
					b.Error(err)
					return
				}
			}
			st.Close()
		})
	}
	wg.Wait()
	var got int64
	for range streams {
		got += <-done
	}
	b.StopTimer()
	if want := int64(b.N) * int64(size); got != want {
		b.Fatalf("readers got %d bytes, want %d", got, want)
	}
}

func BenchmarkTLSBaseline(b *testing.B) {
	b.Run("1MiB", func(b *testing.B) { benchmarkTLS(b, 1<<20) })
	b.Run("64B", func(b *testing.B) { benchmarkTLS(b, 64) })
}

// drain reads r to EOF with a 64 KiB buffer and reports the byte count.
func drain(r io.Reader, done chan<- int64) {
	n, _ := io.CopyBuffer(writerOnly{io.Discard}, readerOnly{r}, make([]byte, 64<<10))
	done <- n
}

func benchmarkTunnel(b *testing.B, tr transport, size int) {
	ts := startTunnelServer(b, serverOptions{tr: tr})
	client, server := ts.dial(b, nil)
	st, err := client.OpenStream()
	if err != nil {
		b.Fatal(err)
	}
	peer, err := server.AcceptStream()
	if err != nil {
		b.Fatal(err)
	}
	defer peer.Close()
	done := make(chan int64, 1)
	go drain(peer, done)
	runTransfer(b, st, st.Close, done, size)
}

func benchmarkTLS(b *testing.B, size int) {
	// Borrow httptest's certificate and the client configuration trusting it.
	certSrv := httptest.NewUnstartedServer(nil)
	certSrv.StartTLS()
	defer certSrv.Close()
	clientTLS := certSrv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()

	ln, err := tls.Listen("tcp", "127.0.0.1:0", certSrv.TLS.Clone())
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- -1
			return
		}
		defer c.Close()
		drain(c, done)
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), clientTLS)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	runTransfer(b, c, c.CloseWrite, done, size)
}

// runTransfer writes b.N buffers of size bytes to w, closes its write side
// and waits for the reader to have everything, all inside the timer.
func runTransfer(b *testing.B, w io.Writer, closeWrite func() error, done <-chan int64, size int) {
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := closeWrite(); err != nil {
		b.Fatal(err)
	}
	n := <-done
	b.StopTimer()
	if n != int64(b.N)*int64(size) {
		b.Fatalf("reader got %d bytes, want %d", n, int64(b.N)*int64(size))
	}
}

// BenchmarkTCPBaseline is the same transfer over plain loopback TCP: the
// ceiling the tunnel is measured against.
func BenchmarkTCPBaseline(b *testing.B) {
	b.Run("1MiB", func(b *testing.B) { benchmarkTCP(b, 1<<20) })
	b.Run("64B", func(b *testing.B) { benchmarkTCP(b, 64) })
}

func benchmarkTCP(b *testing.B, size int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- -1
			return
		}
		defer c.Close()
		drain(c, done)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	runTransfer(b, c, c.(*net.TCPConn).CloseWrite, done, size)
}

// TestStreamResetAndRemoteClosed checks, over a WebSocket session, that a
// reset reaches the peer as one (yamux.ErrConnectionReset, not EOF), and
// that RemoteClosed tells the EOF after the peer's FIN from the EOF after
// the session's end. An EarlyStream reset before its reply stops waiting
// for it.
func TestStreamResetAndRemoteClosed(t *testing.T) {
	t.Parallel()
	ts := startTunnelServer(t, serverOptions{tr: transport{}})
	client, server := ts.dial(t, nil)
	accepted := make(chan *Stream, 4)
	go func() {
		for {
			st, err := server.AcceptStream()
			if err != nil {
				return // the session has ended
			}
			accepted <- st
		}
	}()
	open := func() (*Stream, *Stream) {
		t.Helper()
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte("x"))
		peer := <-accepted
		peer.SetDeadline(time.Now().Add(testTimeout))
		st.SetDeadline(time.Now().Add(testTimeout))
		if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		return st, peer
	}

	reset, resetPeer := open()
	if err := reset.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := resetPeer.Read(make([]byte, 1)); !errors.Is(err, yamux.ErrConnectionReset) {
		t.Errorf("the peer of a reset stream read %v, want %v", err, yamux.ErrConnectionReset)
	}

	e, err := OpenEarly(t.Context(), func(context.Context) (*Session, error) { return client, nil }, Header{Kind: KindTCP, Target: "example.com:80"})
	if err != nil {
		t.Fatal(err)
	}
	replied := make(chan error, 1)
	go func() { replied <- e.WaitReply(t.Context()) }()
	earlyPeer := <-accepted // its header came; no reply is sent
	if err := e.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := <-replied; !errors.Is(err, net.ErrClosed) {
		t.Errorf("WaitReply of an EarlyStream reset before its reply returned %v, want %v", err, net.ErrClosed)
	}
	earlyPeer.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadAll(earlyPeer); !errors.Is(err, yamux.ErrConnectionReset) {
		t.Errorf("the peer of a reset EarlyStream read %v, want %v", err, yamux.ErrConnectionReset)
	}

	finished, finishedPeer := open()
	cut, cutPeer := open()
	finishedPeer.Write([]byte("all"))
	finishedPeer.Close()
	if b, err := io.ReadAll(finished); err != nil || string(b) != "all" || !finished.RemoteClosed() {
		t.Fatalf("after the peer's FIN: read %q, %v, RemoteClosed %v; want all, EOF, true", b, err, finished.RemoteClosed())
	}
	cutPeer.Write([]byte("some"))
	if _, err := io.ReadFull(cut, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	server.Close()
	if b, err := io.ReadAll(cut); err != nil || len(b) != 0 || cut.RemoteClosed() {
		t.Errorf("after the session's end: read %q, %v, RemoteClosed %v; want nothing more, EOF, false", b, err, cut.RemoteClosed())
	}
}
