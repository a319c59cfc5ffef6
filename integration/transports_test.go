package integration

// The HTTP transports beneath the session, where WebSocket does not pass:
// a real nginx that removes the upgrade and holds whole bodies, which the
// client must find out for itself and poll through; and a proxy written
// here that repeats, drops and delays whole polls, through which the
// bytes must still arrive exactly once and in order.

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
)

// bufferingNginxConf is nginx terminating TLS in front of a --tls off
// server as an antivirus or DLP proxy would: the tunnel's location is
// passed on as plain HTTP/1.1, without the Upgrade and Connection headers
// that a WebSocket needs, and with both bodies held whole (request
// buffering, response buffering that the server's X-Accel-Buffering: no
// cannot turn off). proxy_bind gives nginx's side of the upstream
// connections an address of its own, as in nginxConf.
const bufferingNginxConf = `events { worker_connections 1024; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;

    server {
        listen %[2]s ssl;
        ssl_certificate %[3]s;
        ssl_certificate_key %[4]s;

        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_bind 127.0.0.3;
        proxy_buffering on;
        proxy_request_buffering on;
        proxy_ignore_headers X-Accel-Buffering;

        location = /tunnel {
            proxy_pass http://%[5]s;
        }
        location / {
            return 404;
        }
    }
}
`

// startBufferingNginx runs nginx with bufferingNginxConf in front of the
// server at upstream, in the foreground as a single process (so that
// SIGKILL by PID leaves no worker behind), and returns the address of its
// TLS port once it serves cert there.
func startBufferingNginx(t *testing.T, cert harness.CertPair, upstream string) string {
	t.Helper()
	bin := extProgram(t, "nginx")
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	for range 5 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(randomConfigPort()))
		text := fmt.Sprintf(bufferingNginxConf, dir, addr, cert.CertFile, cert.KeyFile, upstream)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		global := fmt.Sprintf("daemon off; master_process off; pid %s/nginx.pid; error_log stderr notice;", dir)
		p := harness.StartCmd(t, "nginx", exec.Command(bin, "-e", "stderr", "-p", dir, "-c", conf, "-g", global), syscall.SIGTERM)
		serving := func(string) bool { return servedFingerprint(addr, "localhost") == cert.Fingerprint }
		if waitStarted(t, p, serving, nginxBindFailed) {
			return addr
		}
		p.Kill(t)
	}
	t.Fatal("nginx could not bind a port in 5 attempts")
	return ""
}

var (
	upgradeRemovedFallback = regexp.MustCompile(`msg="a proxy between here and the server removed the WebSocket upgrade[^"]*; using HTTP streaming" transport=stream`)
	heldBodiesFallback     = regexp.MustCompile(`msg="a proxy on the way holds streamed bodies: [^"]*; using HTTP polling" transport=poll`)
	connectedOverPoll      = regexp.MustCompile(`msg=connected .*transport=poll`)
	sessionOverPoll        = regexp.MustCompile(`msg="session opened".* source=(\S+) transport=poll`)
)

// TestPollingThroughBufferingNginx puts the client behind an nginx that
// neither upgrades nor streams: with the default --transport auto it must
// see the upgrade removed, then the streamed bodies held, say so, and
// settle on polling, which then carries a large transfer intact and
// several connections at once.
func TestPollingThroughBufferingNginx(t *testing.T) {
	t.Parallel()
	extProgram(t, "nginx")
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	srv := startServerBehindProxy(t, "server", authfile, "--trusted-proxy", "127.0.0.3/32", "--path", "/tunnel")
	addr := startBufferingNginx(t, cert, srv.Addr)
	echo := harness.StartEcho(t)

	client, locals := startClientEnv(t, "client", nil, "wss://"+addr+"/tunnel",
		[]string{"--fingerprint", cert.Fingerprint}, "127.0.0.1:0:"+echo)
	for _, re := range []*regexp.Regexp{upgradeRemovedFallback, heldBodiesFallback, connectedOverPoll} {
		if client.CountLog(re) != 1 {
			t.Errorf("the client logged %d lines matching %q, want 1", client.CountLog(re), re)
		}
	}
	// The server names the client from nginx's X-Forwarded-For, as over
	// WebSocket.
	if m := srv.WaitLog(t, sessionOverPoll, harness.IOTimeout); m[1] != "127.0.0.1" {
		t.Errorf("server logged the polling session from source=%s, want 127.0.0.1 (from nginx's X-Forwarded-For)", m[1])
	}
	harness.EchoRoundTrip(t, locals[0], []byte("polled through a buffering nginx"))

	t.Run("large transfer", func(t *testing.T) {
		const size = 16 << 20
		var key [32]byte
		for i := range key {
			key[i] = byte(rand.Uint32())
		}
		start := time.Now()
		got, sent, back, err := echoHashed(locals[0], rand.NewChaCha8(key), size)
		if err != nil {
			t.Fatal(err)
		}
		if got != size || sent != back {
			t.Fatalf("sent %d bytes (sha256 %x), got %d back (sha256 %x)", size, sent, got, back)
		}
		took := time.Since(start)
		t.Logf("%d MiB each way polled through nginx in %v (%.1f MiB/s each way)", size>>20, took.Round(time.Millisecond), float64(size>>20)/took.Seconds())
	})

	t.Run("concurrent connections", func(t *testing.T) {
		concurrentEchoes(t, locals[0], 8, 1<<20)
	})

	if n := client.CountLog(lostSessionLine); n != 0 {
		t.Errorf("the client lost its session %d times", n)
	}
	if n := srv.CountLog(sessionOverPoll); n != 1 {
		t.Errorf("the server opened %d polling sessions, want 1", n)
	}
	// The stream nginx held never became a session.
	if n := srv.CountLog(regexp.MustCompile(`msg="session opened"`)); n != 1 {
		t.Errorf("the server opened %d sessions, want only the polling one", n)
	}
}

// The faults pollFaultProxy makes, on the requests of a polling connection.
const (
	faultNone        = iota
	faultDropRequest // answered 502 without being passed on
	faultDropAnswer  // passed on, its answer replaced with a 504
	faultRepeat      // passed on twice, answered with one of the two answers
	faultDelay       // passed on after 0-50ms
	faultKinds
)

var faultNames = [faultKinds]string{"none", "dropped requests", "dropped answers", "repeated requests", "delayed requests"}

// pollFaultProxy is a TLS-terminating reverse proxy in front of a --tls off
// server that passes whole requests and answers, as a proxy holding
// bodies does, and does to those of polling connections (they carry
// Burrow-Session) what an unreliable one does: drops, repeats and delays
// them, on a pseudo-random schedule fixed by its seed.
type pollFaultProxy struct {
	backend string // host:port of the server
	tr      *http.Transport
	handled sync.WaitGroup // the handlers, waited for when the test ends
	// The body bytes passed to the server and from it, repeats and
	// dropped answers included.
	up, down atomic.Int64

	mu     sync.Mutex
	rng    *rand.Rand
	counts [faultKinds]int
}

// faultRate is the chance, in percent, of each fault on a poll: four
// kinds of 4% make 16% of the polls faulty.
const faultRate = 4

// startPollFaultProxy serves a pollFaultProxy for backend on a loopback port with
// cert, and returns it and its address.
func startPollFaultProxy(t *testing.T, cert harness.CertPair, backend string, seed uint64) (*pollFaultProxy, string) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	fp := &pollFaultProxy{
		backend: backend,
		tr: &http.Transport{
			Proxy:               nil, // the server is on loopback, whatever the machine's proxy
			DisableCompression:  true,
			MaxIdleConnsPerHost: 8,
		},
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		Handler:      fp,
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{pair}},
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}, // HTTP/1.1, as the client speaks
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		hs.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		hs.Close() // cancels the requests being served, and so their forwards
		<-served
		fp.handled.Wait()
		fp.tr.CloseIdleConnections()
	})
	return fp, ln.Addr().String()
}

// draw picks the fault for the next poll, and the delay for faultDelay or
// which answer faultRepeat gives.
func (fp *pollFaultProxy) draw() (kind int, delay time.Duration, second bool) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	u := fp.rng.IntN(100)
	kind = faultNone
	if u < faultRate*(faultKinds-1) {
		kind = 1 + u/faultRate
	}
	delay = time.Duration(fp.rng.IntN(51)) * time.Millisecond
	second = fp.rng.IntN(2) == 1
	fp.counts[kind]++
	return kind, delay, second
}

// faults returns how many times each fault was made so far.
func (fp *pollFaultProxy) faults() [faultKinds]int {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return fp.counts
}

// heldAnswer is a whole answer from the server.
type heldAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (fp *pollFaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fp.handled.Add(1)
	defer fp.handled.Done()
	body, err := readWhole(r.Body, r.ContentLength)
	if err != nil {
		return // the client is gone, or sends it again
	}
	if r.Header.Get("Burrow-Session") == "" { // the opening request
		fp.relay(w, r, body)
		return
	}
	kind, delay, second := fp.draw()
	switch kind {
	case faultDropRequest:
		http.Error(w, "dropped before it was passed on", http.StatusBadGateway)
	case faultDropAnswer:
		if _, err := fp.forward(r, body); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		http.Error(w, "the answer was dropped", http.StatusGatewayTimeout)
	case faultRepeat:
		first, err := fp.forward(r, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		again, err := fp.forward(r, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if second {
			first = again
		}
		fp.answer(w, first)
	case faultDelay:
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		fp.relay(w, r, body)
	default:
		fp.relay(w, r, body)
	}
}

// relay passes r on and its answer back.
func (fp *pollFaultProxy) relay(w http.ResponseWriter, r *http.Request, body []byte) {
	a, err := fp.forward(r, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	fp.answer(w, a)
}

// proxyHopHeaders are the headers of one connection, which a proxy does not
// pass on.
var proxyHopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"}

// forward sends r, with body, to the server and takes its whole answer.
func (fp *pollFaultProxy) forward(r *http.Request, body []byte) (heldAnswer, error) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+fp.backend+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return heldAnswer{}, err
	}
	req.Header = r.Header.Clone()
	for _, h := range proxyHopHeaders {
		req.Header.Del(h)
	}
	req.Host = r.Host
	resp, err := fp.tr.RoundTrip(req)
	if err != nil {
		return heldAnswer{}, err
	}
	defer resp.Body.Close()
	data, err := readWhole(resp.Body, resp.ContentLength)
	if err != nil {
		return heldAnswer{}, err
	}
	fp.up.Add(int64(len(body)))
	fp.down.Add(int64(len(data)))
	return heldAnswer{resp.StatusCode, resp.Header, data}, nil
}

// readWhole reads a body of length n (-1: unknown) whole, in one
// allocation when its length is known: under the race detector every
// byte copied costs, and io.ReadAll copies each body several times as it
// grows.
func readWhole(body io.Reader, n int64) ([]byte, error) {
	const limit = 4 << 20 // well above what a poll carries (1 MiB)
	if n < 0 || n > limit {
		return io.ReadAll(io.LimitReader(body, limit))
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(body, data); err != nil {
		return nil, err
	}
	return data, nil
}

// answer writes a whole answer from the server.
func (fp *pollFaultProxy) answer(w http.ResponseWriter, a heldAnswer) {
	h := w.Header()
	for k, v := range a.header {
		h[k] = v
	}
	for _, k := range proxyHopHeaders {
		h.Del(k)
	}
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(a.status)
	w.Write(a.body)
}

// faultEchoTimeout bounds the transfer through the fault proxy: several
// times what it takes on a loaded 2-core machine under the race detector.
const faultEchoTimeout = 5 * time.Minute

// TestPollingThroughFaultyProxy polls through a proxy that drops, repeats
// and delays whole requests and answers: a large transfer must come back
// byte for byte over the one session, every kind of fault having been
// made many times on the way.
func TestPollingThroughFaultyProxy(t *testing.T) {
	t.Parallel()
	const (
		size = 256 << 20
		seed = 20260104
	)
	proxyCert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	srv := startServerBehindProxy(t, "server", authfile, "--path", "/tunnel")
	fp, addr := startPollFaultProxy(t, proxyCert, srv.Addr, seed)
	// An echo whose deadline outlasts the transfer (StartEcho's is 2 minutes).
	echo := harness.StartTarget(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(faultEchoTimeout))
		if _, err := io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 64<<10)); err != nil {
			return
		}
		c.CloseWrite()
	})

	client, locals := startClientEnv(t, "client", nil, "wss://"+addr+"/tunnel",
		[]string{"--fingerprint", proxyCert.Fingerprint, "--transport", "poll"}, "127.0.0.1:0:"+echo)
	if client.CountLog(connectedOverPoll) != 1 {
		t.Errorf("the client did not log that it connected with transport=poll")
	}
	t.Logf("fault schedule seed %d", seed)

	r := pumpEcho(locals[0], seed, size, faultEchoTimeout)
	counts := fp.faults()
	polls := 0
	for _, n := range counts {
		polls += n
	}
	t.Logf("%d MiB each way in %v (%.1f MiB/s each way) over %d polls: %d dropped requests, %d dropped answers, %d repeated, %d delayed",
		r.echoed>>20, r.elapsed.Round(time.Millisecond), float64(r.echoed>>20)/r.elapsed.Seconds(), polls,
		counts[faultDropRequest], counts[faultDropAnswer], counts[faultRepeat], counts[faultDelay])
	t.Logf("the proxy passed %d MiB to the server and %d MiB from it", fp.up.Load()>>20, fp.down.Load()>>20)
	if r.err != nil {
		t.Fatalf("echo of %d bytes through the faulty proxy: %v (sent %d, %d came back intact)", size, r.err, r.sent, r.echoed)
	}
	for kind := faultNone + 1; kind < faultKinds; kind++ {
		if counts[kind] < 5 {
			t.Errorf("the proxy made %d %s, want at least 5 for the test to mean anything", counts[kind], faultNames[kind])
		}
	}
	if n := client.CountLog(lostSessionLine); n != 0 {
		t.Errorf("the client lost its session %d times through the faults, want 0", n)
	}
	if n := srv.CountLog(sessionOverPoll); n != 1 {
		t.Errorf("the server opened %d polling sessions, want 1", n)
	}
}
