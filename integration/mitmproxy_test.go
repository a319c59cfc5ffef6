package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"

	"github.com/burrowtun/burrow/integration/harness"
)

var (
	mitmReady      = regexp.MustCompile(`Proxy server listening at`)
	mitmBindFailed = regexp.MustCompile(`(?i)address already in use|Errno 98`)
)

// startMitmdump starts mitmproxy's mitmdump as an HTTP proxy that
// intercepts every TLS connection with its own CA (made in a fresh
// configuration directory) and writes every flow it sees, WebSocket
// messages included, to flows. It returns the proxy's address and the
// CA's certificate file.
func startMitmdump(t *testing.T, flows string) (p *harness.Proc, addr, caFile string) {
	t.Helper()
	bin := extProgram(t, "mitmdump")
	confdir := t.TempDir()
	for range 5 {
		port := strconv.Itoa(randomConfigPort())
		cmd := exec.Command(bin, "--listen-host", "127.0.0.1", "--listen-port", port, "--set", "confdir="+confdir,
			"--ssl-insecure", "-w", flows)
		p := harness.StartCmd(t, "mitmdump", cmd, syscall.SIGINT)
		if waitStarted(t, p, readyOnLog(mitmReady), mitmBindFailed) {
			return p, net.JoinHostPort("127.0.0.1", port), filepath.Join(confdir, "mitmproxy-ca-cert.pem")
		}
		p.Kill(t)
	}
	t.Fatal("mitmdump could not bind a port in 5 attempts")
	return nil, "", ""
}

// encodings are the forms in which secret could sit in a capture: as is,
// in hex, and in base64 of either alphabet at each of the three
// alignments it can have inside a longer encoded text (the middle of each,
// which does not depend on the bytes around it).
func encodings(secret []byte) [][]byte {
	forms := [][]byte{secret, []byte(hex.EncodeToString(secret)), bytes.ToUpper([]byte(hex.EncodeToString(secret)))}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for shift := range 3 {
			s := enc.EncodeToString(append(make([]byte, shift), secret...))
			if shift > 0 {
				s = s[4:]
			}
			forms = append(forms, []byte(s[:len(s)-4]))
		}
	}
	return forms
}

// foundIn reports which form of secret capture holds, or "".
func foundIn(capture, secret []byte) string {
	for i, f := range encodings(secret) {
		if bytes.Contains(capture, f) {
			return []string{"raw", "hex", "HEX"}[min(i, 2)] + map[bool]string{true: " (base64)", false: ""}[i > 2]
		}
	}
	return ""
}

func randomMarker(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// TestInspectingMitmproxy: mitmproxy intercepts the TLS connection and
// records every flow, WebSocket messages included. Of a pinned client's
// session, run end to end, the record holds neither the password, nor a
// random marker sent through a forward, nor a marker inside a sent file,
// in any encoding, nor of a client that pins nothing and trusts the
// proxy's CA through its system roots; of a client told to trust the proxy (--inspection
// allow), it holds the credentials and the marker it sent: the record
// is what the proxy could read.
func TestInspectingMitmproxy(t *testing.T) {
	t.Parallel()
	flows := filepath.Join(t.TempDir(), "flows.mitm")
	mitm, proxyAddr, caFile := startMitmdump(t, flows)

	password := "pw-" + hex.EncodeToString(randomMarker(t)[:12])
	trusting := "tp-" + hex.EncodeToString(randomMarker(t)[:12])
	unpinned := "up-" + hex.EncodeToString(randomMarker(t)[:12])
	// The server's certificate comes from a CA in the system store, as
	// with ACME, so that a client may also trust it without a pin.
	public := newCA(t, "Public Test CA")
	cert := public.issue(t)
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, password)
	burrow.NewUser(t, authfile, "trusting", trusting)
	burrow.NewUser(t, authfile, "unpinned", unpinned)
	fsrv := startFileServer(t, cert, authfile, t.TempDir())
	echo := harness.StartEcho(t)
	proxy := []string{"--proxy", "http://" + proxyAddr}
	pin := []string{"--fingerprint", cert.Fingerprint}

	forwarded, inFile, readable, bound := randomMarker(t), randomMarker(t), randomMarker(t), randomMarker(t)

	p, locals := startClientEnv(t, "client", []string{"BURROW_AUTH=" + harness.TestUser + ":" + password},
		fsrv.URL, append(proxy, pin...), "127.0.0.1:0:"+echo)
	harness.EchoRoundTrip(t, locals[0], forwarded)
	wantLogLine(t, p, "TLS inspection: a proxy on the way terminates the TLS connection; the session runs end to end inside it, where the proxy reads nothing (--inspection refuse or allow to change this)",
		`issuer="CN=mitmproxy,O=mitmproxy"`)
	stopClientCleanly(t, p)

	file := filepath.Join(t.TempDir(), "report.bin")
	body := append(append(bytes.Repeat([]byte("quarterly figures "), 4000), inFile...), bytes.Repeat([]byte(" end"), 1000)...)
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	send := burrow.Start(t, "send", "", append(append([]string{}, clearProxyEnv...), "BURROW_AUTH="+harness.TestUser+":"+password),
		append(append([]string{"send"}, append(proxy, pin...)...), "--to", "inbox", fsrv.URL, file)...)
	if code := send.WaitExit(t, transferTimeout); code != 0 {
		t.Fatalf("burrow send: exit %d\n%s", code, send.Stderr.String())
	}
	if got, err := os.ReadFile(filepath.Join(fsrv.root, "inbox", "report.bin")); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("the sent file did not arrive intact (%v)", err)
	}

	// A client that pins nothing and whose system roots hold mitmproxy's
	// CA: the server's channel binding gives the proxy away.
	roots := append([]string{"BURROW_AUTH=unpinned:" + unpinned}, systemRoots(t, public, &inspectionCA{certFile: caFile})...)
	up, upLocals := startClientEnv(t, "unpinned", roots, fsrv.URL, proxy, "127.0.0.1:0:"+echo)
	harness.EchoRoundTrip(t, upLocals[0], bound)
	stopClientCleanly(t, up)
	if up.CountLog(inspectionLine) == 0 {
		t.Errorf("the client that pins nothing did not log the inspection:\n%s", up.Stderr.String())
	}

	env := []string{"BURROW_AUTH=trusting:" + trusting, "SSL_CERT_FILE=" + caFile, "SSL_CERT_DIR=/nonexistent"}
	ctl, ctlLocals := startClientEnv(t, "trusting", env, fsrv.URL, append(append(proxy, pin...), "--inspection", "allow"), "127.0.0.1:0:"+echo)
	harness.EchoRoundTrip(t, ctlLocals[0], readable)
	stopClientCleanly(t, ctl)

	mitm.Signal(t, syscall.SIGINT)
	mitm.WaitExit(t, harness.ExitTimeout)
	capture, err := os.ReadFile(flows)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mitmproxy recorded %d bytes of flows", len(capture))
	if foundIn(capture, readable) == "" || foundIn(capture, []byte("trusting:"+trusting)) == "" {
		t.Fatal("the record lacks what the trusting client let the proxy read: it does not show what passes through")
	}
	for name, secret := range map[string][]byte{
		"the password":                   []byte(password),
		"the user and password":          []byte(harness.TestUser + ":" + password),
		"the forwarded marker":           forwarded,
		"the marker in a sent file":      inFile,
		"the unpinned client's password": []byte(unpinned),
		"the unpinned client's marker":   bound,
	} {
		if form := foundIn(capture, secret); form != "" {
			t.Errorf("mitmproxy's record holds %s, %s", name, form)
		}
	}
}
