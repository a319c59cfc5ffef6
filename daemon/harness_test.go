package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
)

// record is one log line as the test sees it.
type record struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// logRecorder is a slog.Handler that keeps every line for the test to
// wait on.
type logRecorder struct {
	mu   *sync.Mutex
	recs *[]record
	with []slog.Attr
}

func newLogRecorder() *logRecorder {
	return &logRecorder{mu: new(sync.Mutex), recs: new([]record)}
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *l
	c.with = append(append([]slog.Attr(nil), l.with...), as...)
	return &c
}

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := record{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range l.with {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	*l.recs = append(*l.recs, rec)
	l.mu.Unlock()
	return nil
}

// find returns the n-th line (from 1) whose message is msg.
func (l *logRecorder) find(msg string, n int) (record, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range *l.recs {
		if r.msg == msg {
			if n--; n == 0 {
				return r, true
			}
		}
	}
	return record{}, false
}

func (l *logRecorder) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range *l.recs {
		if r.msg == msg {
			n++
		}
	}
	return n
}

// wait waits for the n-th line with message msg.
func (l *logRecorder) wait(t *testing.T, msg string, n int) record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r, ok := l.find(msg, n); ok {
			return r
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no log line %q (#%d) within 10s", msg, n)
	return record{}
}

// fakeNotifier records what Run tells the service manager.
type fakeNotifier struct {
	mu            sync.Mutex
	events        []string
	watchdogEnded bool // Watchdog's context ended and it returned
}

func (n *fakeNotifier) add(e string) { n.mu.Lock(); n.events = append(n.events, e); n.mu.Unlock() }
func (n *fakeNotifier) Ready()       { n.add("ready") }
func (n *fakeNotifier) Reloading()   { n.add("reloading") }
func (n *fakeNotifier) Stopping()    { n.add("stopping") }
func (n *fakeNotifier) Watchdog(ctx context.Context) {
	<-ctx.Done()
	n.mu.Lock()
	n.watchdogEnded = true
	n.mu.Unlock()
}

func (n *fakeNotifier) seen() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := strings.Join(n.events, ",")
	if n.watchdogEnded {
		s += " (watchdog ended)"
	}
	return s
}

// writeCert writes a fresh self-signed pair for 127.0.0.1 into dir and
// returns its certificate.
func writeCert(t *testing.T, dir string, valid time.Duration) *x509.Certificate {
	t.Helper()
	certPEM, keyPEM, err := certs.GenerateSelfSigned([]string{"127.0.0.1"}, valid)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := certs.WriteKeyPair(dir, certPEM, keyPEM, true); err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// fixture is a daemon running on loopback ports with a generated
// certificate and a users file holding alice.
type fixture struct {
	cfg      Config
	log      *logRecorder
	notify   *fakeNotifier
	reload   chan os.Signal
	leaf     *x509.Certificate
	addr     string // the tunnel listener
	admin    string // the admin listener
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
	stopErr  error
}

const certValidity = 825 * 24 * time.Hour

// testConfig is a Config for loopback ports, with a fresh certificate
// (returned) and a users file holding alice (password alice-pw, any
// target).
func testConfig(t *testing.T, log *logRecorder, leaf **x509.Certificate) Config {
	t.Helper()
	dir := t.TempDir()
	l := writeCert(t, dir, certValidity)
	if leaf != nil {
		*leaf = l
	}
	authFile := filepath.Join(dir, "users.toml")
	if err := server.AddUser(authFile, "alice", "alice-pw", []string{".*"}); err != nil {
		t.Fatal(err)
	}
	return Config{
		Listen:          "127.0.0.1:0",
		Admin:           "127.0.0.1:0",
		CertFile:        filepath.Join(dir, certs.CertFileName),
		KeyFile:         filepath.Join(dir, certs.KeyFileName),
		AuthFile:        authFile,
		ShutdownTimeout: 5 * time.Second,
		Logger:          slog.New(log),
	}
}

// startFixture runs a daemon of testConfig, its certificate valid for
// certValid, after edit has changed the Config.
func startFixture(t *testing.T, certValid time.Duration, edit func(*Config)) *fixture {
	t.Helper()
	f := &fixture{log: newLogRecorder(), notify: &fakeNotifier{}, reload: make(chan os.Signal, 1), done: make(chan error, 1)}
	f.cfg = testConfig(t, f.log, &f.leaf)
	if certValid != certValidity {
		f.leaf = writeCert(t, filepath.Dir(f.cfg.CertFile), certValid)
	}
	f.cfg.Reload, f.cfg.Notify = f.reload, f.notify
	if edit != nil {
		edit(&f.cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() { f.done <- Run(ctx, f.cfg) }()
	t.Cleanup(func() {
		if err := f.stop(t); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	f.addr = f.log.wait(t, "listening", 1).attrs["addr"]
	f.admin = f.log.wait(t, "admin listening", 1).attrs["addr"]
	return f
}

// stop ends Run, as SIGTERM does, and returns its result.
func (f *fixture) stop(t *testing.T) error {
	f.stopOnce.Do(func() {
		f.cancel()
		select {
		case f.stopErr = <-f.done:
		case <-time.After(20 * time.Second):
			f.stopErr = fmt.Errorf("Run did not return 20s after its context ended")
		}
	})
	return f.stopErr
}

// dial opens a tunnel session as user.
func (f *fixture) dial(t *testing.T, user, password string) (*mux.Session, error) {
	t.Helper()
	h := http.Header{}
	(&http.Request{Header: h}).SetBasicAuth(user, password)
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := mux.Dial(ctx, "wss://"+f.addr+"/", &mux.DialOptions{HTTPClient: &http.Client{Transport: tr}, Header: h})
	if err == nil {
		t.Cleanup(func() { sess.Close() })
	}
	return sess, err
}

// get fetches path from the admin listener.
func (f *fixture) get(t *testing.T, path string) (int, string) {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + f.admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric is the value of the sample named name (with its labels, as
// written in the text format) on /metrics; -1 when absent.
func (f *fixture) metric(t *testing.T, name string) float64 {
	t.Helper()
	_, body := f.get(t, "/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return x
		}
	}
	return -1
}

// waitMetric waits up to 10 s for the sample name to read want, and
// returns what it last read: a gauge may be set just after the log line
// a test waited for.
func (f *fixture) waitMetric(t *testing.T, name string, want float64) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := f.metric(t, name)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// holdListener accepts TCP connections and holds them open without a
// byte either way, until the test ends.
func holdListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}
