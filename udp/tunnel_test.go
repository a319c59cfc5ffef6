package udp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/relay"
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
		srv.Listener = mux.CoalescingListener(srv.Listener, 0)
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
			return mux.CoalesceWrites(c, 0), nil
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
	sess *mux.Session
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
	cfg *mux.Config
	// wrap, when set, wraps the server's listener (to count its writes).
	wrap func(net.Listener) net.Listener
}

func startTunnelServer(tb testing.TB, o serverOptions) *tunnelServer {
	tb.Helper()
	ts := &tunnelServer{accepted: make(chan acceptResult, 8)}
	ts.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := mux.Accept(w, r, o.cfg)
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
func (ts *tunnelServer) dial(tb testing.TB, cfg *mux.Config) (client, server *mux.Session) {
	tb.Helper()
	return ts.dialURL(tb, ts.wsURL(), cfg)
}

// dialURL is dial through another address, such as a proxy in front of ts.
func (ts *tunnelServer) dialURL(tb testing.TB, url string, cfg *mux.Config) (client, server *mux.Session) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	client, err := mux.Dial(ctx, url, &mux.DialOptions{HTTPClient: ts.client, Config: cfg})
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
func serveStreams(tb testing.TB, sess *mux.Session, handle func(*mux.Stream)) {
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
func echo(st *mux.Stream) {
	st.SetDeadline(time.Now().Add(testTimeout))
	io.Copy(st, st)
}

// echoOnce sends payload on a new stream, half-closes, and checks that the
// same bytes come back.
func echoOnce(sess *mux.Session, payload []byte) error {
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

// countingWriter records each Write so tests can check that a frame
// leaves in a single call.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// strictReader serves data one byte per Read and records any attempt to
// read past limit.
type strictReader struct {
	data     []byte
	off      int
	limit    int
	overread bool
}

func (r *strictReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.off >= r.limit {
		r.overread = true
	}
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	p[0] = r.data[r.off]
	r.off++
	return 1, nil
}

// blockingDial waits for its context to end, as a dial to a host that
// never answers does.
func blockingDial(ctx context.Context, network, address string) (net.Conn, error) {
	<-ctx.Done()
	return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
}

// failingDial returns a dial function that fails with err.
func failingDial(err error) relay.DialFunc {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		return nil, err
	}
}

// wantRefusal checks that err is a *RemoteError with code and, when msg
// is set, exactly that message.
func wantRefusal(t *testing.T, err error, code mux.Code, msg string) {
	t.Helper()
	var re *mux.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *RemoteError", err, err)
	}
	if re.Code != code {
		t.Errorf("code = %d (%q), want %d", re.Code, re.Message, code)
	}
	if msg != "" && re.Message != msg {
		t.Errorf("message = %q, want %q", re.Message, msg)
	}
}
