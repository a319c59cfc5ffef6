package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
	"github.com/coder/websocket"
)

// runFailingClient runs a client that must give up on its own (see
// runFailing) and returns it and its one-line explanation.
func runFailingClient(t *testing.T, url, auth string, flags []string, remotes ...string) (*harness.Proc, string) {
	t.Helper()
	args := append([]string{"client"}, flags...)
	args = append(args, url)
	args = append(args, remotes...)
	return runFailing(t, []string{"BURROW_AUTH=" + auth}, args...)
}

// runFailing runs a burrow command that must fail: it checks that the
// process exits non-zero within harness.ExitTimeout, without a retry loop, writes
// nothing to stdout, and explains itself in exactly one "burrow: ..." line
// on stderr besides its log, which it returns.
func runFailing(t *testing.T, env []string, args ...string) (*harness.Proc, string) {
	t.Helper()
	p := burrow.Start(t, args[0], "", env, args...)
	start := time.Now()
	code := p.WaitExit(t, harness.ExitTimeout)
	t.Logf("burrow %s exited with code %d after %v", args[0], code, time.Since(start).Round(time.Millisecond))
	if code == 0 {
		t.Errorf("exit code 0, want non-zero")
	}
	logs, other := harness.StderrLines(p)
	for _, l := range logs {
		if strings.Contains(l, "retrying") {
			t.Errorf("retried a failure that retrying cannot fix: %s", l)
		}
	}
	if len(other) != 1 || !strings.HasPrefix(other[0], "burrow: ") {
		t.Fatalf("stderr has %d lines besides the log, want exactly one \"burrow: ...\" line: %q", len(other), other)
	}
	if out := p.Stdout.String(); out != "" {
		t.Errorf("wrote to stdout: %q", out)
	}
	t.Logf("stderr: %s", other[0])
	return p, other[0]
}

// wantWords fails the test unless line contains every word (case-insensitive).
func wantWords(t *testing.T, line string, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(strings.ToLower(line), strings.ToLower(w)) {
			t.Errorf("message %q does not mention %q", line, w)
		}
	}
}

// writeCert writes a self-signed certificate valid for hosts from notBefore
// to notAfter, for what 'burrow cert self-signed' refuses to make.
func writeCert(t *testing.T, notBefore, notAfter time.Time, hosts ...string) harness.CertPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0]},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := harness.CertPair{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	if err := os.WriteFile(c.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	out := burrow.Run(t, "", "cert", "fingerprint", c.CertFile)
	c.Fingerprint = strings.TrimSpace(out)
	if len(c.Fingerprint) != 64 {
		t.Fatalf("burrow cert fingerprint printed %q", out)
	}
	return c
}

// TestBadInput feeds the binary bad command lines, wrong credentials, untrusted
// certificates, forbidden and unreachable targets, servers of other kinds,
// garbage, and clients of other kinds, and checks that each is refused with a
// clear message, and that what must stay up does. The cases that concern the
// client are in this file, those that concern the server in
// serverinput_test.go.
func TestBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		run  func(*testing.T)
	}{
		{"command line mistakes", testCommandLineMistakes},
		{"wrong password", testWrongPassword},
		{"unknown fingerprint", testUnknownFingerprint},
		{"expired certificate", testExpiredCertificate},
		{"wrong host certificate", testWrongHostCertificate},
		{"no trust flag", testNoTrustFlag},
		{"server port does not speak TLS", testServerWithoutTLS},
		{"server of another wire version", testServerOfOtherWireVersion},
		{"ACL denied target", testACLDeniedTarget},
		{"unreachable target", testUnreachableTarget},
		{"garbage to the server port", testGarbage},
		{"foreign websocket client", testForeignWebSocketClient},
		{"hostile tunnel client", testHostileTunnelClient},
		{"plain HTTPS GET", testPlainHTTPSGet},
		{"responses before a close", testResponsesBeforeClose},
		{"login rate limit", testLoginRateLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t)
		})
	}
}

// testCommandLineMistakes runs each command with a mistake in its flags or arguments.
func testCommandLineMistakes(t *testing.T) {
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	missing := filepath.Join(t.TempDir(), "missing.json")
	otherKey := burrow.NewCert(t, "localhost").KeyFile
	auth := []string{"BURROW_AUTH=" + harness.TestUser + ":" + harness.TestPass}
	// None of these gets as far as dialing or binding, but if one did,
	// nothing listens on port 1 and port 0 binds any free port.
	const url, remote = "wss://127.0.0.1:1", "127.0.0.1:0:127.0.0.1:1"
	server := func(args ...string) []string { return append([]string{"server", "--listen", "127.0.0.1:0"}, args...) }
	tests := []struct {
		name  string
		env   []string
		args  []string
		words []string // the message must mention each
	}{
		{
			"cert with negative validity", nil,
			[]string{"cert", "self-signed", "--host", "localhost", "--valid", "-1h", "--out", t.TempDir()},
			[]string{"valid"},
		},
		{
			"cert over existing files", nil,
			[]string{"cert", "self-signed", "--host", "localhost", "--out", filepath.Dir(cert.CertFile)},
			[]string{"exists", "--force"},
		},
		{
			"server without certificate", nil,
			server("--authfile", authfile),
			[]string{"--tls-cert"},
		},
		{
			"server with missing authfile", nil,
			server("--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile, "--authfile", missing),
			[]string{missing},
		},
		{
			"server with key of another certificate", nil,
			server("--tls-cert", cert.CertFile, "--tls-key", otherKey, "--authfile", authfile),
			[]string{cert.CertFile, otherKey},
		},
		{
			"client without credentials", nil,
			[]string{"client", "--fingerprint", cert.Fingerprint, url, remote},
			[]string{"--auth"},
		},
		{
			"client with two trust flags", auth,
			[]string{"client", "--fingerprint", cert.Fingerprint, "--ca", cert.CertFile, url, remote},
			[]string{"--ca", "--fingerprint"},
		},
		{
			"client with malformed fingerprint", auth,
			[]string{"client", "--fingerprint", "abc123", url, remote},
			[]string{"fingerprint", "abc123"},
		},
		{
			"client without remotes", auth,
			[]string{"client", "--fingerprint", cert.Fingerprint, url},
			[]string{"remote"},
		},
		{
			"client with malformed remote", auth,
			[]string{"client", "--fingerprint", cert.Fingerprint, url, "127.0.0.1:notaport:x:y:z"},
			[]string{"notaport"},
		},
		{
			"server with a tiny copy buffer", nil,
			server("--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile, "--authfile", authfile, "--copy-buffer", "100"),
			[]string{"--copy-buffer", "100", "16384"},
		},
		{
			"client with a huge copy buffer", auth,
			[]string{"client", "--fingerprint", cert.Fingerprint, "--copy-buffer", "1000000000", url, remote},
			[]string{"--copy-buffer", "1000000000", "1048576"},
		},
		{
			"client with plain ws URL", auth,
			[]string{"client", "--fingerprint", cert.Fingerprint, "ws://127.0.0.1:1", remote},
			[]string{"wss://"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, line := runFailing(t, tt.env, tt.args...)
			wantWords(t, line, tt.words...)
		})
	}
}

// testWrongPassword checks that rejected credentials end the client at once, and that the password is
// never written anywhere.
func testWrongPassword(t *testing.T) {
	const wrongPass = "Wr0ng-Pa55word-7d1f3c"
	srv := burrow.StartTestServer(t, nil)
	client, line := runFailingClient(t, srv.URL, harness.TestUser+":"+wrongPass,
		[]string{"--fingerprint", srv.Cert.Fingerprint}, "127.0.0.1:0:127.0.0.1:1")
	wantWords(t, line, "rejected", "401", harness.TestUser)
	srv.WaitLog(t, regexp.MustCompile(`level=WARN msg="login failed" user=`+harness.TestUser+` .*source=127\.0\.0\.1`), harness.IOTimeout)
	for _, p := range []*harness.Proc{srv.Proc, client} {
		if strings.Contains(p.Stderr.String()+p.Stdout.String(), wrongPass) {
			t.Errorf("%s output contains the password", p.Name)
		}
	}
	if b, err := os.ReadFile(srv.Authfile); err != nil {
		t.Error(err)
	} else if strings.Contains(string(b), harness.TestPass) {
		t.Errorf("users file %s contains the password in clear", srv.Authfile)
	}
}

// testUnknownFingerprint pins the fingerprint of another certificate.
func testUnknownFingerprint(t *testing.T) {
	srv := burrow.StartTestServer(t, nil)
	other := burrow.NewCert(t, "localhost", "127.0.0.1")
	_, line := runFailingClient(t, srv.URL, harness.TestUser+":"+harness.TestPass,
		[]string{"--fingerprint", other.Fingerprint}, "127.0.0.1:0:127.0.0.1:1")
	wantWords(t, line, "fingerprint")
	if srv.CountLog(harness.SessionOpenedLine) != 0 {
		t.Errorf("server opened a session for a client that does not trust it")
	}
}

// testExpiredCertificate trusts, with --ca, a server certificate that has expired.
func testExpiredCertificate(t *testing.T) {
	now := time.Now()
	cert := writeCert(t, now.Add(-48*time.Hour), now.Add(-time.Hour), "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	srv := burrow.StartServer(t, cert, authfile)
	_, line := runFailingClient(t, srv.URL, harness.TestUser+":"+harness.TestPass,
		[]string{"--ca", cert.CertFile}, "127.0.0.1:0:127.0.0.1:1")
	wantWords(t, line, "expired")
}

// testWrongHostCertificate trusts, with --ca, a certificate for another host name.
func testWrongHostCertificate(t *testing.T) {
	cert := burrow.NewCert(t, "other.example")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	srv := burrow.StartServer(t, cert, authfile)
	_, line := runFailingClient(t, srv.URL, harness.TestUser+":"+harness.TestPass,
		[]string{"--ca", cert.CertFile}, "127.0.0.1:0:127.0.0.1:1")
	wantWords(t, line, "other.example", "127.0.0.1", "--sni")
}

// testNoTrustFlag verifies a self-signed server against the system roots.
func testNoTrustFlag(t *testing.T) {
	srv := burrow.StartTestServer(t, nil)
	// Verified against the system roots, which do not hold this cert.
	_, line := runFailingClient(t, srv.URL, harness.TestUser+":"+harness.TestPass, nil, "127.0.0.1:0:127.0.0.1:1")
	wantWords(t, line, "no trusted CA", "--accept-new", "--ca", "--fingerprint")
}

// testServerWithoutTLS points the client at ports that answer without TLS.
func testServerWithoutTLS(t *testing.T) {
	plainHTTP := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plainHTTP.Close)
	sshLike := harness.StartTarget(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(harness.IOTimeout))
		io.WriteString(c, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
		io.Copy(io.Discard, c)
	})
	tests := []struct {
		name, addr string
	}{
		{"plain HTTP", plainHTTP.Listener.Addr().String()},
		{"SSH banner", sshLike},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, line := runFailingClient(t, "wss://"+tt.addr, harness.TestUser+":"+harness.TestPass,
				[]string{"--insecure"}, "127.0.0.1:0:127.0.0.1:1")
			wantWords(t, line, "TLS")
		})
	}
}

// testServerOfOtherWireVersion points the client at servers that do not speak its wire version.
func testServerOfOtherWireVersion(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		words   []string
	}{
		{
			// What a burrow server answers a client whose wire
			// version it does not speak.
			"refuses the upgrade",
			func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "wire version mismatch: this server speaks burrow.v0; upgrade the client", http.StatusBadRequest)
			},
			[]string{"400", "wire version"},
		},
		{
			// A WebSocket server that ignores the subprotocol.
			"upgrades without the subprotocol",
			func(w http.ResponseWriter, r *http.Request) {
				ws, err := websocket.Accept(w, r, nil)
				if err != nil {
					return
				}
				defer ws.CloseNow()
				ctx, cancel := context.WithTimeout(r.Context(), harness.IOTimeout)
				defer cancel()
				ws.Read(ctx)
			},
			[]string{"wire version"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := httptest.NewTLSServer(tt.handler)
			t.Cleanup(fake.Close)
			_, line := runFailingClient(t, "wss://"+fake.Listener.Addr().String(), harness.TestUser+":"+harness.TestPass,
				[]string{"--insecure"}, "127.0.0.1:0:127.0.0.1:1")
			wantWords(t, line, tt.words...)
		})
	}
}

// testACLDeniedTarget forwards to a target the user is not allowed: that connection is refused,
// the session stays up.
func testACLDeniedTarget(t *testing.T) {
	denied, allowed := harness.StartEcho(t), harness.StartEcho(t)
	tun := burrow.StartTunnel(t, []string{regexp.QuoteMeta(allowed)}, nil, nil,
		"127.0.0.1:0:"+denied, "127.0.0.1:0:"+allowed)
	expectResetWithoutData(t, tun.Locals[0])
	deniedRE := regexp.QuoteMeta(denied)
	tun.Client.WaitLog(t, regexp.MustCompile(`msg="forward refused" .*remote=`+deniedRE+` .*not allowed`), harness.IOTimeout)
	tun.Server.WaitLog(t, regexp.MustCompile(`msg="stream refused" .*target=`+deniedRE+` .*not allowed`), harness.IOTimeout)
	harness.EchoRoundTrip(t, tun.Locals[1], []byte("still here after a refusal"))
	assertOneSession(t, tun)
}

// testUnreachableTarget forwards to a port nothing listens on: that connection is refused,
// the session stays up.
func testUnreachableTarget(t *testing.T) {
	// Nothing listens on port 1 (tcpmux) of the loopback address.
	const unreachable = "127.0.0.1:1"
	echo := harness.StartEcho(t)
	tun := burrow.StartTunnel(t, nil, nil, nil, "127.0.0.1:0:"+unreachable, "127.0.0.1:0:"+echo)
	expectResetWithoutData(t, tun.Locals[0])
	refused := `.*connection refused by ` + regexp.QuoteMeta(unreachable)
	tun.Client.WaitLog(t, regexp.MustCompile(`msg="forward refused" `+refused), harness.IOTimeout)
	tun.Server.WaitLog(t, regexp.MustCompile(`msg="stream refused" `+refused), harness.IOTimeout)
	harness.EchoRoundTrip(t, tun.Locals[1], []byte("still here after a refused dial"))
	assertOneSession(t, tun)
}

// expectResetWithoutData connects to a forward whose target is refused and
// checks that the connection is reset without a byte of data: a clean
// close would look like a target that accepted and had nothing to say.
func expectResetWithoutData(t *testing.T, local string) {
	t.Helper()
	c := harness.DialRefused(t, local)
	if c == nil {
		return // reset as it connected
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading a refused forward: %v, want a reset (ECONNRESET)", err)
	}
	if len(got) != 0 {
		t.Fatalf("refused forward sent %q, want nothing", got)
	}
}

// assertOneSession checks that the client never lost its session.
func assertOneSession(t *testing.T, tun *harness.Tunnel) {
	t.Helper()
	if n := tun.Server.CountLog(harness.SessionOpenedLine); n != 1 {
		t.Errorf("server logged %d \"session opened\" lines, want 1", n)
	}
	if n := tun.Client.CountLog(regexp.MustCompile(`connection lost`)); n != 0 {
		t.Errorf("client lost its session %d times", n)
	}
}
