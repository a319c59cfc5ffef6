package integration

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
	"golang.org/x/sys/unix"
)

// Tests of running the server as a service: systemd notifications,
// reloads on SIGHUP, the admin listener's metrics and status, and the
// drain on SIGTERM.

var (
	streamClosedLine = regexp.MustCompile(`msg="stream closed"`)
	connectionLost   = regexp.MustCompile(`msg="connection lost; reconnecting"`)
)

// startServerWithEnv is burrow.StartServer on 127.0.0.1:0 with variables added to
// the server's environment.
func startServerWithEnv(t *testing.T, cert harness.CertPair, authfile string, env []string, args ...string) *harness.Server {
	t.Helper()
	full := append([]string{"server", "--listen", "127.0.0.1:0", "--tls-cert", cert.CertFile,
		"--tls-key", cert.KeyFile, "--authfile", authfile}, args...)
	p := burrow.Start(t, "server", "", env, full...)
	m := p.WaitLog(t, harness.ListeningLine, harness.StartTimeout)
	return &harness.Server{Proc: p, Addr: m[1], URL: "wss://" + m[1], Cert: cert, Authfile: authfile}
}

// notifySocket stands in for systemd: a unixgram socket whose path goes in
// NOTIFY_SOCKET, collecting the datagrams sd_notify sends.
type notifySocket struct {
	path      string
	msgs      chan notification
	watchdogs int // WATCHDOG=1 pings skipped by next; the test's goroutine only
}

// notification is one datagram and when it arrived.
type notification struct {
	state string
	at    time.Time
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	ns := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock"), msgs: make(chan notification, 1024)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ns.msgs)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			select {
			case ns.msgs <- notification{string(buf[:n]), time.Now()}:
			default: // nobody is reading: drop rather than block
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return ns
}

// receive returns the next notification, failing the test after timeout.
func (ns *notifySocket) receive(t *testing.T, timeout time.Duration) notification {
	t.Helper()
	select {
	case m, ok := <-ns.msgs:
		if !ok {
			t.Fatal("notify socket closed")
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no notification within %v", timeout)
		return notification{}
	}
}

// next returns the next notification other than a watchdog ping, which it
// counts; it fails the test after timeout.
func (ns *notifySocket) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := ns.receive(t, time.Until(deadline))
		if m.state != "WATCHDOG=1" {
			return m.state
		}
		ns.watchdogs++
	}
}

// expect fails the test unless the next notification other than a
// watchdog ping is want.
func (ns *notifySocket) expect(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	if got := ns.next(t, timeout); got != want {
		t.Fatalf("notification %q, want %q", got, want)
	}
}

// quiet fails the test if a notification other than a watchdog ping
// arrives within d.
func (ns *notifySocket) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-ns.msgs:
			if !ok {
				t.Fatal("notify socket closed")
			}
			if m.state != "WATCHDOG=1" {
				t.Fatalf("notification %q, want none yet", m.state)
			}
			ns.watchdogs++
		case <-deadline:
			return
		}
	}
}

// awaitWatchdogs waits for the next n watchdog pings, failing on any other
// notification, and returns the time between the first and the last.
func (ns *notifySocket) awaitWatchdogs(t *testing.T, n int, timeout time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var first, last time.Time
	for i := range n {
		m := ns.receive(t, time.Until(deadline))
		if m.state != "WATCHDOG=1" {
			t.Fatalf("notification %q while waiting for watchdog pings", m.state)
		}
		ns.watchdogs++
		if i == 0 {
			first = m.at
		}
		last = m.at
	}
	return last.Sub(first)
}

// monotonicNow reads CLOCK_MONOTONIC in microseconds, the clock of
// systemd's MONOTONIC_USEC.
func monotonicNow(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

// tlsFingerprintAt connects to addr with TLS and returns the SHA-256 of
// the public key of the certificate it presents, as 'burrow cert' prints
// it. It fails the test if the handshake fails.
func tlsFingerprintAt(t *testing.T, addr string) string {
	t.Helper()
	d := &net.Dialer{Timeout: harness.IOTimeout}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	certs := c.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		t.Fatalf("%s presented no certificate", addr)
	}
	sum := sha256.Sum256(certs[0].RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// adminGet fetches path from the admin listener and returns the status
// code and body.
func adminGet(t *testing.T, admin, path string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: harness.IOTimeout}
	resp, err := hc.Get("http://" + admin + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// TestNotify plays systemd to the server (Type=notify, WatchdogSec) and to
// the client: what they say on NOTIFY_SOCKET and when.
func TestNotify(t *testing.T) {
	t.Parallel()
	// WATCHDOG_USEC without WATCHDOG_PID: the pings go to whoever reads
	// the socket, as under systemd.
	const watchdogUsec = 200_000
	env := func(ns *notifySocket) []string {
		return []string{"NOTIFY_SOCKET=" + ns.path, "WATCHDOG_USEC=" + strconv.Itoa(watchdogUsec)}
	}
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)

	t.Run("server", func(t *testing.T) {
		t.Parallel()
		ns := listenNotify(t)
		// As the unit runs it: with the shipped config file, whose paths
		// and ports the flags override here.
		p := burrow.Start(t, "server", "", env(ns), "server", "--config", filepath.Join(repoRoot(t), "deploy", "server.toml"),
			"--listen", "127.0.0.1:0", "--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile,
			"--authfile", authfile, "--admin", "127.0.0.1:0")
		ns.expect(t, "READY=1", harness.StartTimeout)
		// READY=1 means serving: the TLS port answers a handshake, and
		// /readyz says so, right away.
		addr := p.WaitLog(t, harness.ListeningLine, harness.StartTimeout)[1]
		if got := tlsFingerprintAt(t, addr); got != cert.Fingerprint {
			t.Errorf("server presents fingerprint %s, want %s", got, cert.Fingerprint)
		}
		admin := p.WaitLog(t, harness.AdminLine, harness.StartTimeout)[1]
		if code, body := adminGet(t, admin, "/readyz"); code != http.StatusOK {
			t.Errorf("/readyz after READY=1: %d %q, want 200", code, body)
		}

		// Pings every WATCHDOG_USEC/2: six span five intervals, 500 ms.
		// A ping delayed by load may come close to the next, so only
		// half of that is required.
		span := ns.awaitWatchdogs(t, 6, harness.StartTimeout)
		t.Logf("6 watchdog pings over %v", span.Round(time.Millisecond))
		if want := 5 * watchdogUsec / 2 * time.Microsecond; span < want/2 {
			t.Errorf("6 watchdog pings over %v, want about %v: faster than every WATCHDOG_USEC/2", span, want)
		}

		// SIGHUP: RELOADING=1 stamped with the monotonic clock, then READY=1.
		before := monotonicNow(t)
		p.Signal(t, syscall.SIGHUP)
		reloading := ns.next(t, harness.IOTimeout)
		after := monotonicNow(t)
		state, stamp, ok := strings.Cut(reloading, "\n")
		usec, err := strconv.ParseInt(strings.TrimPrefix(stamp, "MONOTONIC_USEC="), 10, 64)
		if !ok || state != "RELOADING=1" || !strings.HasPrefix(stamp, "MONOTONIC_USEC=") || err != nil {
			t.Fatalf("notification %q after SIGHUP, want RELOADING=1\\nMONOTONIC_USEC=N", reloading)
		}
		if usec < before || usec > after {
			t.Errorf("MONOTONIC_USEC=%d is not between the SIGHUP (%d) and its receipt (%d) on CLOCK_MONOTONIC", usec, before, after)
		}
		ns.expect(t, "READY=1", harness.IOTimeout)
		p.WaitLog(t, regexp.MustCompile(`msg="users reloaded"`), harness.IOTimeout)

		// SIGTERM: STOPPING=1, then a clean exit.
		p.Signal(t, syscall.SIGTERM)
		ns.expect(t, "STOPPING=1", harness.IOTimeout)
		if code := p.WaitExit(t, harness.ExitTimeout); code != 0 {
			t.Errorf("server exit code %d after SIGTERM, want 0", code)
		}
	})

	// The client says READY=1 once its first session is up, not before:
	// with the server frozen (SIGSTOP) it is bound and dialing, but quiet.
	t.Run("client", func(t *testing.T) {
		t.Parallel()
		srv := burrow.StartServer(t, cert, authfile)
		echo := harness.StartEcho(t)
		ns := listenNotify(t)
		srv.Signal(t, syscall.SIGSTOP)
		t.Cleanup(func() { syscall.Kill(srv.Cmd.Process.Pid, syscall.SIGCONT) })
		client := burrow.Start(t, "client", "", append(env(ns), "BURROW_AUTH="+harness.TestUser+":"+harness.TestPass),
			"client", "--fingerprint", cert.Fingerprint, srv.URL, "127.0.0.1:0:"+echo)
		client.WaitLog(t, harness.ForwardLine, harness.StartTimeout)
		ns.quiet(t, 500*time.Millisecond)
		srv.Signal(t, syscall.SIGCONT)
		ns.expect(t, "READY=1", harness.StartTimeout)
		client.WaitLog(t, harness.ConnectedLine, harness.IOTimeout)
		local := client.WaitLog(t, harness.ForwardLine, harness.StartTimeout)[1]
		harness.EchoRoundTrip(t, local, []byte("ready means forwarding"))
		ns.awaitWatchdogs(t, 3, harness.StartTimeout)
		client.Signal(t, syscall.SIGTERM)
		ns.expect(t, "STOPPING=1", harness.IOTimeout)
		if code := client.WaitExit(t, harness.ExitTimeout); code != 0 {
			t.Errorf("client exit code %d after SIGTERM, want 0", code)
		}
	})
}

// echoTransfer sends size bytes of a seeded pseudo-random stream through a
// forward to an echo target while reading the echo back, hashing both. It
// can stop at a byte offset until told to go on, and then go on slowly,
// so that a test can act in the middle of a transfer.
type echoTransfer struct {
	size    int64
	paused  chan struct{} // closed when pauseAt bytes have been written
	resume  chan struct{} // close to write the rest
	resumed sync.Once
	done    chan struct{} // closed when both directions have finished

	// Valid after done.
	sent, got [sha256.Size]byte
	gotBytes  int64
	err       error
}

// startEchoTransfer dials local and starts the transfer. After pauseAt
// bytes it waits for go; after that it sleeps pace between 64 KiB writes.
// The connection is closed, and the transfer waited for, when the test
// ends.
func startEchoTransfer(t *testing.T, local string, seed uint64, size, pauseAt int64, pace time.Duration) *echoTransfer {
	t.Helper()
	x := &echoTransfer{size: size, paused: make(chan struct{}), resume: make(chan struct{}), done: make(chan struct{})}
	c, err := net.DialTimeout("tcp", local, harness.IOTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	t.Cleanup(func() {
		x.goOn()
		c.Close()
		<-x.done
	})
	werr := make(chan error, 1)
	go func() {
		h := sha256.New()
		rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
		buf := make([]byte, 64<<10)
		var written int64
		for written < size {
			n := int64(len(buf))
			if written < pauseAt {
				n = min(n, pauseAt-written)
			}
			n = min(n, size-written)
			rng.Read(buf[:n])
			h.Write(buf[:n])
			if _, err := c.Write(buf[:n]); err != nil {
				werr <- fmt.Errorf("write after %d bytes: %w", written, err)
				return
			}
			written += n
			if written == pauseAt {
				close(x.paused)
				<-x.resume
			} else if written > pauseAt && pace > 0 {
				time.Sleep(pace)
			}
		}
		copy(x.sent[:], h.Sum(nil))
		werr <- c.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		defer close(x.done)
		h := sha256.New()
		n, rerr := io.Copy(h, c)
		if rerr != nil {
			c.Close() // unblock the writer
		}
		x.gotBytes = n
		copy(x.got[:], h.Sum(nil))
		x.err = errors.Join(<-werr, rerr)
	}()
	return x
}

func (x *echoTransfer) goOn() { x.resumed.Do(func() { close(x.resume) }) }

// awaitPaused waits until the first pauseAt bytes have been written.
func (x *echoTransfer) awaitPaused(t *testing.T) {
	t.Helper()
	select {
	case <-x.paused:
	case <-x.done:
		t.Fatalf("transfer ended before its pause: %v", x.err)
	case <-time.After(harness.IOTimeout):
		t.Fatalf("transfer did not reach its pause within %v", harness.IOTimeout)
	}
}

// check waits for the transfer to end and fails the test unless every byte
// came back unchanged.
func (x *echoTransfer) check(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-x.done:
	case <-time.After(timeout):
		t.Fatalf("transfer of %d bytes not finished within %v", x.size, timeout)
	}
	if x.err != nil {
		t.Fatalf("transfer: %v (%d of %d bytes came back)", x.err, x.gotBytes, x.size)
	}
	if x.gotBytes != x.size || x.sent != x.got {
		t.Fatalf("transfer: %d of %d bytes came back, sha256 %x, sent %x", x.gotBytes, x.size, x.got, x.sent)
	}
}

// replaceFile puts the contents of src at dst atomically: a temporary
// file beside dst, renamed over it.
func replaceFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// TestReload changes the users file and the certificate under a running
// server and sends SIGHUP, in the middle of a long transfer: a removed
// user's session ends, everyone else's goes on untouched, and new
// connections get the new certificate.
func TestReload(t *testing.T) {
	t.Parallel()
	const (
		alicePass = "alice's long passphrase"
		bobPass   = "bob's long passphrase"
		size      = 64 << 20
	)
	echo := harness.StartEcho(t)
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, "alice", alicePass)
	burrow.NewUser(t, authfile, "bob", bobPass)
	srv := burrow.StartServer(t, cert, authfile, "--admin", "127.0.0.1:0")
	admin := srv.AdminAddr(t)
	pin := []string{"--fingerprint", cert.Fingerprint}
	alice, aliceLocals := burrow.StartClient(t, srv.URL, "alice:"+alicePass, pin, "127.0.0.1:0:"+echo)
	bob, bobLocals := burrow.StartClient(t, srv.URL, "bob:"+bobPass, append([]string{"--max-retry-interval", "500ms"}, pin...), "127.0.0.1:0:"+echo)
	harness.EchoRoundTrip(t, bobLocals[0], []byte("bob is connected"))

	// Alice's transfer is a quarter done, and stays so until both reloads
	// are over.
	transfer := startEchoTransfer(t, aliceLocals[0], 1, size, size/4, 0)
	transfer.awaitPaused(t)

	// Bob goes.
	burrow.Run(t, "", "user", "remove", "--authfile", authfile, "bob")
	srv.Signal(t, syscall.SIGHUP)
	srv.WaitLog(t, regexp.MustCompile(`level=WARN msg="closing session: user removed from the users file" session=\S+ user=bob`), harness.IOTimeout)
	srv.WaitLog(t, regexp.MustCompile(`msg="users reloaded" users=1 sessions_closed=1`), harness.IOTimeout)
	bob.WaitLog(t, connectionLost, harness.IOTimeout)
	// He tries again, is refused as unknown, and gives up.
	if code := bob.WaitExit(t, harness.IOTimeout); code == 0 {
		t.Errorf("removed user's client exited 0, want non-zero")
	}
	if _, other := harness.StderrLines(bob); len(other) != 1 || !strings.Contains(other[0], "401") {
		t.Errorf("removed user's client said %q, want one line about HTTP 401", other)
	}

	// A new certificate, swapped in the way certbot's deploy hooks do it;
	// one that expires in ten days, which the server warns about.
	now := time.Now()
	cert2 := writeCert(t, now.Add(-time.Hour), now.Add(10*24*time.Hour), "localhost", "127.0.0.1")
	replaceFile(t, cert2.KeyFile, cert.KeyFile)
	replaceFile(t, cert2.CertFile, cert.CertFile)
	srv.Signal(t, syscall.SIGHUP)
	srv.WaitLog(t, regexp.MustCompile(`msg="certificate reloaded" fingerprint=`+cert2.Fingerprint), harness.IOTimeout)
	srv.WaitLog(t, regexp.MustCompile(`level=WARN msg="the TLS certificate expires soon; renew it"`), harness.IOTimeout)
	if got := tlsFingerprintAt(t, srv.Addr); got != cert2.Fingerprint {
		t.Errorf("after the reload the server presents %s, want the new certificate's %s", got, cert2.Fingerprint)
	}
	_, locals2 := burrow.StartClient(t, srv.URL, "alice:"+alicePass, []string{"--fingerprint", cert2.Fingerprint}, "127.0.0.1:0:"+echo)
	harness.EchoRoundTrip(t, locals2[0], []byte("pinned to the new certificate"))

	// Alice's transfer finishes, on the session it started on.
	transfer.goOn()
	transfer.check(t, harness.IOTimeout)
	if n := alice.CountLog(connectionLost); n != 0 {
		t.Errorf("alice's client lost its session %d times across the reloads", n)
	}
	if alice.Exited() {
		t.Errorf("alice's client exited (code %d)", alice.ExitCode)
	}
	m := scrapeMetrics(t, admin)
	if got := m.value("burrow_reloads_total", "result", "ok"); got != 2 {
		t.Errorf(`burrow_reloads_total{result="ok"} = %v, want 2`, got)
	}
	if got := m.value("burrow_sessions"); got != 2 {
		t.Errorf("burrow_sessions = %v, want 2 (alice twice)", got)
	}
	if got, want := m.value("burrow_certificate_expiry_timestamp_seconds"), float64(certNotAfter(t, cert2.CertFile).Unix()); got != want {
		t.Errorf("burrow_certificate_expiry_timestamp_seconds = %v, want the new certificate's %v", got, want)
	}
}

// promSamples is one scrape of /metrics: each sample's value by its name
// and labels, the labels sorted by name, e.g.
// burrow_streams_total{kind="tcp",result="ok"}.
type promSamples map[string]float64

var promLabel = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func scrapeMetrics(t *testing.T, admin string) promSamples {
	t.Helper()
	code, body := adminGet(t, admin, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	m := promSamples{}
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("/metrics: bad sample line %q", line)
		}
		series := line[:i]
		name, labels, ok := strings.Cut(series, "{")
		var kv []string
		if ok {
			for _, l := range promLabel.FindAllStringSubmatch(labels, -1) {
				kv = append(kv, l[1], l[2])
			}
		}
		m[promKey(name, kv...)] = v
	}
	return m
}

// promKey is the key of promSamples for name and label pairs given as
// name, value, name, value...
func promKey(name string, labels ...string) string {
	var pairs []string
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+`="`+labels[i+1]+`"`)
	}
	if len(pairs) == 0 {
		return name
	}
	slices.Sort(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// value is the sample's value; a counter that has not counted anything yet
// has no sample, hence 0.
func (m promSamples) value(name string, labels ...string) float64 {
	return m[promKey(name, labels...)]
}

// TestMetrics does countable things to a server and checks that its
// Prometheus counters moved by exactly as much, and that /status and
// 'burrow status' list the sessions.
func TestMetrics(t *testing.T) {
	t.Parallel()
	const (
		conns     = 5
		connBytes = 100_000
		failures  = 3
	)
	// A target that reads to EOF and answers how many bytes it read: a
	// different count each way, so that directions cannot be mixed up.
	sink := harness.StartTarget(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(harness.IOTimeout))
		if n, err := io.Copy(io.Discard, c); err == nil {
			fmt.Fprintf(c, "%d\n", n)
		}
	})
	reply := fmt.Sprintf("%d\n", connBytes)
	_, sinkPort, _ := net.SplitHostPort(sink)
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, "alice", harness.TestPass, `127\.0\.0\.1:`+sinkPort) // the sink only
	burrow.NewUser(t, authfile, "bob", harness.TestPass)
	srv := burrow.StartServer(t, cert, authfile, "--admin", "127.0.0.1:0")
	admin := srv.AdminAddr(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := adminGet(t, admin, path); code != http.StatusOK {
			t.Errorf("%s: %d %q, want 200", path, code, body)
		}
	}

	pin := []string{"--fingerprint", cert.Fingerprint}
	_, alice := burrow.StartClient(t, srv.URL, "alice:"+harness.TestPass, pin, "127.0.0.1:0:"+sink, "127.0.0.1:0:127.0.0.1:9")
	_, bob := burrow.StartClient(t, srv.URL, "bob:"+harness.TestPass, pin, "127.0.0.1:0:"+sink)
	srv.WaitLogCount(t, harness.SessionOpenedLine, 2, harness.IOTimeout)
	before := scrapeMetrics(t, admin)

	for range failures {
		runFailingClient(t, srv.URL, "alice:wrong password", pin, "127.0.0.1:0:127.0.0.1:1")
	}
	// And one without credentials at all.
	req, err := http.NewRequest(http.MethodGet, "https://"+srv.Addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	if resp, err := insecureHTTPClient().Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("upgrade without credentials: %s, want 401", resp.Status)
		}
	}

	payload := bytes.Repeat([]byte("0123456789"), connBytes/10)
	for i := range conns {
		local := []string{alice[0], bob[0]}[i%2]
		c, err := net.DialTimeout("tcp", local, harness.IOTimeout)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(harness.IOTimeout))
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != reply {
			t.Fatalf("through %s: sink answered %q (%v), want %q", local, got, err, reply)
		}
	}
	expectResetWithoutData(t, alice[1]) // 127.0.0.1:9 is not on alice's list
	srv.WaitLog(t, regexp.MustCompile(`msg="stream refused" .*user=alice .*target=127\.0\.0\.1:9`), harness.IOTimeout)
	// Byte counts are recorded when a stream closes, just before it is logged.
	srv.WaitLogCount(t, streamClosedLine, conns, harness.IOTimeout)
	after := scrapeMetrics(t, admin)

	deltas := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"burrow_auth_failures_total", []string{"reason", "credentials"}, failures},
		{"burrow_auth_failures_total", []string{"reason", "missing"}, 1},
		{"burrow_auth_failures_total", []string{"reason", "rate_limited"}, 0},
		{"burrow_streams_total", []string{"kind", "tcp", "result", "ok"}, conns},
		{"burrow_streams_total", []string{"kind", "tcp", "result", "refused"}, 1},
		{"burrow_bytes_total", []string{"kind", "tcp", "direction", "in"}, conns * connBytes},
		{"burrow_bytes_total", []string{"kind", "tcp", "direction", "out"}, conns * float64(len(reply))},
		{"burrow_sessions_total", nil, 0},
		{"burrow_reloads_total", []string{"result", "ok"}, 0},
	}
	for _, d := range deltas {
		b, a := before.value(d.name, d.labels...), after.value(d.name, d.labels...)
		if a-b != d.want {
			t.Errorf("%s went from %v to %v, want +%v", promKey(d.name, d.labels...), b, a, d.want)
		}
	}
	gauges := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"burrow_sessions", nil, 2},
		{"burrow_sessions_total", nil, 2},
		{"burrow_handshake_seconds_count", nil, 2},
		{"burrow_streams_open", []string{"kind", "tcp"}, 0},
		{"burrow_certificate_expiry_timestamp_seconds", nil, float64(certNotAfter(t, cert.CertFile).Unix())},
	}
	for _, g := range gauges {
		if got := after.value(g.name, g.labels...); got != g.want {
			t.Errorf("%s = %v, want %v", promKey(g.name, g.labels...), got, g.want)
		}
	}

	// burrow status: one row per session, with the user's name.
	out := burrow.Run(t, "", "status", "--admin", admin)
	t.Logf("burrow status:\n%s", out)
	users := map[string]int{}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] != "SESSION" {
			users[f[1]]++
		}
	}
	if users["alice"] != 1 || users["bob"] != 1 || len(users) != 2 {
		t.Errorf("burrow status lists sessions of %v, want alice and bob once each", users)
	}
}

// certNotAfter reads the expiry of the PEM certificate in file.
func certNotAfter(t *testing.T, file string) time.Time {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.NotAfter
}

// TestDrain stops the server with SIGTERM while a forwarded connection is
// busy: it finishes the transfer within --shutdown-timeout and exits 0
// as soon as it is done, or cuts a connection that never ends at the
// timeout and exits 0 then.
func TestDrain(t *testing.T) {
	t.Parallel()
	t.Run("transfer finishes", func(t *testing.T) {
		t.Parallel()
		const (
			size = 8 << 20
			// 7 MiB after the SIGTERM in 64 KiB writes 15 ms apart:
			// a transfer that goes on for about 1.7 s into the drain.
			pace     = 15 * time.Millisecond
			minDrain = time.Second
		)
		echo := harness.StartEcho(t)
		tun := burrow.StartTunnel(t, nil, []string{"--shutdown-timeout", "10s", "--admin", "127.0.0.1:0"}, nil, "127.0.0.1:0:"+echo)
		admin := tun.Server.AdminAddr(t)
		transfer := startEchoTransfer(t, tun.Locals[0], 2, size, 1<<20, pace)
		transfer.awaitPaused(t)

		tun.Server.Signal(t, syscall.SIGTERM)
		start := time.Now()
		tun.Server.WaitLog(t, regexp.MustCompile(`msg="shutting down"`), harness.IOTimeout)
		transfer.goOn()
		// While it drains it is not ready, and takes no new connections.
		pollUntil(t, harness.IOTimeout, "503 on /readyz while draining", func() bool {
			code, _ := adminGet(t, admin, "/readyz")
			return code == http.StatusServiceUnavailable
		})
		pollUntil(t, harness.IOTimeout, "refusing connections while draining", func() bool {
			c, err := net.DialTimeout("tcp", tun.Server.Addr, time.Second)
			if err == nil {
				c.Close()
			}
			return errors.Is(err, syscall.ECONNREFUSED)
		})

		transfer.check(t, harness.IOTimeout)
		finished := time.Since(start)
		code := tun.Server.WaitExit(t, harness.ExitTimeout)
		exited := time.Since(start)
		t.Logf("transfer finished %v after SIGTERM, server exited (code %d) at %v",
			finished.Round(time.Millisecond), code, exited.Round(time.Millisecond))
		if code != 0 {
			t.Errorf("server exit code %d, want 0", code)
		}
		if finished < minDrain {
			t.Errorf("transfer finished %v after SIGTERM; the test meant it to last over %v into the drain", finished, minDrain)
		}
		if exited > finished+3*time.Second {
			t.Errorf("server exited %v after the last stream finished, want promptly", exited-finished)
		}
		if tun.Server.CountLog(regexp.MustCompile(`msg="shutdown (timeout|cut)`)) != 0 {
			t.Errorf("server cut streams although they finished within --shutdown-timeout")
		}
	})

	t.Run("stuck connection is cut", func(t *testing.T) {
		t.Parallel()
		const drain = time.Second
		echo := harness.StartEcho(t)
		tun := burrow.StartTunnel(t, nil, []string{"--shutdown-timeout", drain.String()}, nil, "127.0.0.1:0:"+echo)
		c, err := net.DialTimeout("tcp", tun.Locals[0], harness.IOTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Some bytes through it, and then nothing, forever.
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(harness.IOTimeout))
		if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
			t.Fatal(err)
		}
		tun.Server.WaitLog(t, regexp.MustCompile(`msg="stream opened"`), harness.IOTimeout)

		tun.Server.Signal(t, syscall.SIGTERM)
		start := time.Now()
		code := tun.Server.WaitExit(t, drain+harness.ExitTimeout)
		took := time.Since(start)
		t.Logf("server exited (code %d) %v after SIGTERM", code, took.Round(time.Millisecond))
		if code != 0 {
			t.Errorf("server exit code %d, want 0", code)
		}
		if took < drain-100*time.Millisecond || took > drain+2*time.Second {
			t.Errorf("server exited %v after SIGTERM, want about --shutdown-timeout %v", took, drain)
		}
		tun.Server.WaitLog(t, regexp.MustCompile(`msg="shutdown timeout: cutting streams still open" streams=1`), 0)
		// The connection is cut, not left hanging.
		c.SetReadDeadline(time.Now().Add(harness.IOTimeout))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("connection still open after the drain (read %d bytes)", n)
		} else if isTimeout(err) {
			t.Errorf("connection still open %v after the drain", harness.IOTimeout)
		}
	})
}
