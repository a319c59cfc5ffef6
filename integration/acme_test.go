package integration

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/integration/harness"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// acmeDomain is the name the test certificate is for: autocert wants a
// dotted name, and .test is reserved for testing. A DNS server in the
// test answers it with 127.0.0.1 for pebble's validation authority; the
// client dials 127.0.0.1 and names the domain with --sni.
const acmeDomain = "burrow.test"

// TestACME runs letsencrypt's pebble, a real ACME server, in the test
// process on loopback. The burrow server is started with --tls-domain
// against it; pebble's validation authority checks the TLS-ALPN-01
// challenge on the burrow server's own port, issues a certificate, and a
// client that trusts only pebble's root connects.
func TestACME(t *testing.T) {
	// Pebble's knobs are environment variables: no random sleeps before
	// validation, no deliberately rejected nonces.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")

	// The burrow server first: pebble must know which port to validate.
	dir := t.TempDir()
	pebbleTLS := burrow.NewCert(t, "127.0.0.1")
	authfile := filepath.Join(dir, "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)

	logger := log.New(io.Discard, "", 0)
	if testing.Verbose() {
		logger = log.New(os.Stderr, "pebble ", log.Lmicroseconds)
	}
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})

	// The directory's address is needed by the burrow server, and the
	// burrow server's port by the validation authority: start the
	// directory's listener first, serve it once both are known.
	dirSrv := httptest.NewUnstartedServer(nil)
	pair, err := tls.LoadX509KeyPair(pebbleTLS.CertFile, pebbleTLS.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	dirSrv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	directory := "https://" + dirSrv.Listener.Addr().String() + wfe.DirectoryPath

	srvProc := burrow.Start(t, "server", "", nil, "server",
		"--listen", "127.0.0.1:0", "--authfile", authfile,
		"--tls-domain", acmeDomain, "--acme-directory", directory, "--acme-ca", pebbleTLS.CertFile,
		"--state-dir", filepath.Join(dir, "state"))
	m := srvProc.WaitLog(t, regexp.MustCompile(`msg=listening addr=127\.0\.0\.1:(\d+)`), harness.StartTimeout)
	port := m[1]

	var tlsPort int
	for _, c := range port {
		tlsPort = tlsPort*10 + int(c-'0')
	}
	validator := va.New(logger, 0, tlsPort, false, startDNS(t), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 3, 5)
	dirSrv.Config.Handler = front.Handler()
	dirSrv.StartTLS()
	t.Cleanup(dirSrv.Close)
	mgmt := httptest.NewServer(front.ManagementHandler())
	t.Cleanup(mgmt.Close)

	// The client's first handshake makes the server order the
	// certificate; it trusts only pebble's root.
	root := fetch(t, mgmt.URL+wfe.RootCertPath+"0")
	rootFile := filepath.Join(dir, "pebble-root.pem")
	if err := os.WriteFile(rootFile, root, 0o600); err != nil {
		t.Fatal(err)
	}
	echo := harness.StartEcho(t)
	client, locals := burrow.StartClient(t, "wss://127.0.0.1:"+port, harness.TestUser+":"+harness.TestPass,
		[]string{"--ca", rootFile, "--sni", acmeDomain}, "127.0.0.1:0:"+echo)
	harness.EchoRoundTrip(t, locals[0], []byte("through a certificate from ACME"))
	client.Kill(t)

	// The certificate really is pebble's, for localhost, and was kept in
	// the state directory's ACME cache.
	cfg, err := certs.ClientConfig(certs.ClientOptions{CAFile: rootFile, ServerName: acmeDomain})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", "127.0.0.1:"+port, cfg)
	if err != nil {
		t.Fatalf("TLS to the server verifying against pebble's root: %v", err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if leaf.VerifyHostname(acmeDomain) != nil || time.Until(leaf.NotAfter) <= 0 {
		t.Errorf("served certificate: names %v, not after %v", leaf.DNSNames, leaf.NotAfter)
	}
	cached, _ := os.ReadDir(filepath.Join(dir, "state", "acme"))
	var names []string
	for _, e := range cached {
		names = append(names, e.Name())
	}
	if !strings.Contains(strings.Join(names, " "), acmeDomain) {
		t.Errorf("ACME cache %v holds no certificate for %s", names, acmeDomain)
	}
}

// startDNS serves A 127.0.0.1 for every name over TCP (how pebble's
// validation authority asks a custom resolver) and returns its address.
func startDNS(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: l, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, question := range q.Question {
			if question.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return l.Addr().String()
}

func fetch(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return body
}
