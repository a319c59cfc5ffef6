package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// newPair generates a self-signed pair for hosts valid from notBefore to notAfter.
func newPair(t *testing.T, notBefore, notAfter time.Time, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := generateSelfSigned(hosts, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// validPair generates a currently valid self-signed pair for hosts.
func validPair(t *testing.T, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := GenerateSelfSigned(hosts, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// writePair writes a pair into a fresh directory.
func writePair(t *testing.T, certPEM, keyPEM []byte) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := WriteKeyPair(t.TempDir(), certPEM, keyPEM, false)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", certPEM)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// serveTLS accepts TLS connections on 127.0.0.1:0 until the test ends, completing each handshake and closing
// the connection. It returns the listener's address.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tls.Server(c, cfg).Handshake() // the client reports what went wrong
			})
		}
	})
	return ln.Addr().String()
}

// dial completes a TLS handshake with addr and returns the connection state.
func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState(), nil
}

func TestGenerateSelfSigned(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		hosts    []string
		validFor time.Duration
		wantDNS  []string
		wantIPs  []string
		wantErr  string
	}{
		{name: "dns", hosts: []string{"example.com", "*.example.net"}, validFor: 24 * time.Hour,
			wantDNS: []string{"example.com", "*.example.net"}},
		{name: "ipv4", hosts: []string{"127.0.0.1"}, validFor: time.Hour, wantIPs: []string{"127.0.0.1"}},
		{name: "ipv6", hosts: []string{"::1", "[2001:db8::1]"}, validFor: time.Hour,
			wantIPs: []string{"::1", "2001:db8::1"}},
		{name: "mixed", hosts: []string{"localhost", "10.0.0.1", "fe80::1"}, validFor: 365 * 24 * time.Hour,
			wantDNS: []string{"localhost"}, wantIPs: []string{"10.0.0.1", "fe80::1"}},
		{name: "no hosts", validFor: time.Hour, wantErr: "at least one"},
		{name: "empty host", hosts: []string{""}, validFor: time.Hour, wantErr: "neither"},
		{name: "host with port", hosts: []string{"example.com:443"}, validFor: time.Hour, wantErr: "port"},
		{name: "url", hosts: []string{"https://example.com"}, validFor: time.Hour, wantErr: "scheme"},
		{name: "zero validity", hosts: []string{"localhost"}, wantErr: "must be positive"},
		{name: "negative validity", hosts: []string{"localhost"}, validFor: -time.Hour, wantErr: "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			certPEM, keyPEM, err := GenerateSelfSigned(tt.hosts, tt.validFor)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cert := parseCert(t, certPEM)
			if !slices.Equal(cert.DNSNames, tt.wantDNS) {
				t.Errorf("DNSNames = %q, want %q", cert.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range cert.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("IPAddresses = %q, want %q", ips, tt.wantIPs)
			}
			if cert.Subject.CommonName != tt.hosts[0] {
				t.Errorf("CommonName = %q, want %q", cert.Subject.CommonName, tt.hosts[0])
			}
			if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
				t.Errorf("public key is %T, want ECDSA P-256", cert.PublicKey)
			}
			if cert.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage = %v, want DigitalSignature", cert.KeyUsage)
			}
			if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("ExtKeyUsage = %v, want ServerAuth and ClientAuth (a self-signed pair also serves as a client certificate for mTLS)", cert.ExtKeyUsage)
			}
			if cert.IsCA {
				t.Error("certificate is a CA")
			}
			if n := cert.SerialNumber; n.Sign() <= 0 || n.BitLen() > 128 {
				t.Errorf("serial %v is not a positive 128-bit number", n)
			}
			if d := start.Add(-time.Hour).Sub(cert.NotBefore); d < -time.Minute || d > time.Minute {
				t.Errorf("NotBefore = %v, want about an hour before %v", cert.NotBefore, start)
			}
			if d := start.Add(tt.validFor).Sub(cert.NotAfter); d < -time.Minute || d > time.Minute {
				t.Errorf("NotAfter = %v, want about %v after %v", cert.NotAfter, tt.validFor, start)
			}
			if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
				t.Errorf("not self-signed: %v", err)
			}
			if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
				t.Errorf("key does not match certificate: %v", err)
			}
		})
	}
}

func TestGenerateSelfSignedSerialsDiffer(t *testing.T) {
	t.Parallel()
	a, _ := validPair(t, "localhost")
	b, _ := validPair(t, "localhost")
	if parseCert(t, a).SerialNumber.Cmp(parseCert(t, b).SerialNumber) == 0 {
		t.Error("two certificates got the same serial number")
	}
}

func TestLoadKeyPair(t *testing.T) {
	t.Parallel()
	certPEM, keyPEM := validPair(t, "localhost", "127.0.0.1")
	certFile, keyFile := writePair(t, certPEM, keyPEM)

	cert, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Leaf == nil || !bytes.Equal(cert.Leaf.Raw, parseCert(t, certPEM).Raw) {
		t.Fatal("Leaf is not the generated certificate")
	}
	if got := cert.PrivateKey.(*ecdsa.PrivateKey).Public(); !cert.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(got) {
		t.Fatal("loaded key does not match loaded certificate")
	}

	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, otherKey := validPair(t, "localhost")
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}})
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name, certFile, keyFile string
		want                    []string // substrings of the error
	}{
		{"missing cert", missing, keyFile, []string{"certificate file", missing, "no such file"}},
		{"missing key", certFile, missing, []string{"key file", missing, "no such file"}},
		{"cert not PEM", write("garbage.crt", []byte("hello")), keyFile,
			[]string{"certificate file", "garbage.crt", "no PEM CERTIFICATE block"}},
		{"key not PEM", certFile, write("garbage.key", []byte("hello")),
			[]string{"key file", "garbage.key", "no PEM PRIVATE KEY block"}},
		{"swapped", keyFile, certFile, []string{"certificate file", keyFile, "no PEM CERTIFICATE block"}},
		{"encrypted key", certFile, write("enc.key", encrypted), []string{"enc.key", "encrypted"}},
		{"key does not match", certFile, write("other.key", otherKey),
			[]string{certFile, "other.key", "does not match"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadKeyPair(tt.certFile, tt.keyFile)
			if err == nil {
				t.Fatal("LoadKeyPair succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := LoadKeyPair(missing, keyFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file error %v is not os.ErrNotExist", err)
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	certPEM, keyPEM := validPair(t, "localhost")
	cert := parseCert(t, certPEM)

	// Independent computation: re-marshal the public key rather than use the raw SPKI bytes.
	spki, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(spki)
	want := hex.EncodeToString(sum[:])

	if got := Fingerprint(cert); got != want {
		t.Errorf("Fingerprint = %s, want %s", got, want)
	}
	for name, data := range map[string][]byte{
		"cert only":      certPEM,
		"key first":      append(slices.Clip(keyPEM), certPEM...),
		"leading text":   append([]byte("subject=CN=localhost\n"), certPEM...),
		"chain, first":   append(slices.Clip(certPEM), otherCert(t)...),
		"trailing space": append(slices.Clip(certPEM), "\n\n"...),
	} {
		got, err := FingerprintPEM(data)
		if err != nil || got != want {
			t.Errorf("%s: FingerprintPEM = %q, %v; want %s", name, got, err, want)
		}
	}
	for name, data := range map[string][]byte{
		"empty":    nil,
		"key only": keyPEM,
		"bad DER":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")}),
	} {
		if got, err := FingerprintPEM(data); err == nil {
			t.Errorf("%s: FingerprintPEM = %q, want an error", name, got)
		}
	}

	// A certificate reissued for the same key keeps its fingerprint.
	reissued := *cert
	reissued.Raw = nil
	if Fingerprint(&reissued) != want {
		t.Error("fingerprint depends on more than the public key")
	}
}

func otherCert(t *testing.T) []byte {
	t.Helper()
	certPEM, _ := validPair(t, "other.example")
	return certPEM
}

func TestFingerprintMatchesOpenSSL(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	certPEM, keyPEM := validPair(t, "localhost")
	certFile, _ := writePair(t, certPEM, keyPEM)
	out, err := exec.Command("sh", "-c",
		"openssl x509 -in "+certFile+" -pubkey -noout | openssl pkey -pubin -outform der | sha256sum").Output()
	if err != nil {
		t.Fatal(err)
	}
	want, _, _ := strings.Cut(string(out), " ")
	if got := Fingerprint(parseCert(t, certPEM)); got != want {
		t.Errorf("Fingerprint = %s, openssl says %s", got, want)
	}
}

func TestParseFingerprint(t *testing.T) {
	t.Parallel()
	sum := sha256.Sum256([]byte("burrow"))
	hexFP := hex.EncodeToString(sum[:])
	var colons []string
	for i := 0; i < len(hexFP); i += 2 {
		colons = append(colons, hexFP[i:i+2])
	}
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"hex", hexFP, true},
		{"upper hex", strings.ToUpper(hexFP), true},
		{"colons", strings.Join(colons, ":"), true},
		{"upper colons", strings.ToUpper(strings.Join(colons, ":")), true},
		{"prefix", "sha256:" + hexFP, true},
		{"upper prefix", "SHA256:" + strings.ToUpper(hexFP), true},
		{"prefix colons", "sha256:" + strings.Join(colons, ":"), true},
		{"spaces around", "  " + hexFP + "\n", true},
		{"base64", base64.StdEncoding.EncodeToString(sum[:]), true},
		{"raw base64", base64.RawStdEncoding.EncodeToString(sum[:]), true},
		{"openssh style", "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:]), true},
		{"empty", "", false},
		{"short hex", hexFP[:62], false},
		{"long hex", hexFP + "00", false},
		{"not hex", strings.Repeat("zz", 32), false},
		{"sha1 length", hexFP[:40], false},
		{"short base64", base64.StdEncoding.EncodeToString(sum[:31]), false},
		{"long base64", base64.StdEncoding.EncodeToString(append(sum[:], 0)), false},
		{"garbage", "garbage!", false},
		{"prefix only", "sha256:", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseFingerprint(tt.in)
			if !tt.ok {
				if err == nil {
					t.Fatalf("ParseFingerprint(%q) = %x, want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), "64 hex digits") || !strings.Contains(err.Error(), "base64") {
					t.Errorf("error %q does not say what form is expected", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, sum[:]) {
				t.Errorf("ParseFingerprint(%q) = %x, want %x", tt.in, got, sum)
			}
		})
	}
}

func TestServerConfig(t *testing.T) {
	t.Parallel()
	cfg := ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil })
	if cfg.MinVersion != tls.VersionTLS12 || !slices.Equal(cfg.NextProtos, []string{"http/1.1"}) ||
		cfg.GetCertificate == nil {
		t.Errorf("ServerConfig = MinVersion %x, NextProtos %q, GetCertificate set %v",
			cfg.MinVersion, cfg.NextProtos, cfg.GetCertificate != nil)
	}
}

func TestClientConfigErrors(t *testing.T) {
	t.Parallel()
	certPEM, keyPEM := validPair(t, "localhost")
	certFile, keyFile := writePair(t, certPEM, keyPEM)
	fp, _ := FingerprintPEM(certPEM)
	tests := []struct {
		name string
		opts ClientOptions
		want string
	}{
		{"fingerprint and insecure", ClientOptions{Fingerprint: fp, Insecure: true}, "only one"},
		{"ca and fingerprint", ClientOptions{CAFile: certFile, Fingerprint: fp}, "only one"},
		{"ca and insecure", ClientOptions{CAFile: certFile, Insecure: true}, "only one"},
		{"missing ca", ClientOptions{CAFile: certFile + ".missing"}, "no such file"},
		{"ca without certificates", ClientOptions{CAFile: keyFile}, "has no PEM certificates"},
		{"bad fingerprint", ClientOptions{Fingerprint: "abc"}, "--fingerprint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := ClientConfig(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ClientConfig = %v, %v; want an error mentioning %q", cfg, err, tt.want)
			}
		})
	}
}

func TestClientConfigHandshake(t *testing.T) {
	t.Parallel()
	now := time.Now()
	good, goodKey := validPair(t, "localhost", "127.0.0.1")
	other, otherKey := validPair(t, "localhost")
	expired, expiredKey := newPair(t, now.Add(-48*time.Hour), now.Add(-24*time.Hour), "localhost")
	future, futureKey := newPair(t, now.Add(24*time.Hour), now.Add(48*time.Hour), "localhost")

	goodCA, _ := writePair(t, good, goodKey)
	otherCA, _ := writePair(t, other, otherKey)
	expiredCA, _ := writePair(t, expired, expiredKey)
	futureCA, _ := writePair(t, future, futureKey)

	goodFP, _ := FingerprintPEM(good)
	otherFP, _ := FingerprintPEM(other)
	upperColonFP := strings.ToUpper(goodFP[:2])
	for i := 2; i < len(goodFP); i += 2 {
		upperColonFP += ":" + strings.ToUpper(goodFP[i:i+2])
	}

	tests := []struct {
		name       string
		certPEM    []byte
		keyPEM     []byte
		opts       ClientOptions
		wantErr    any    // pointer to the error type expected in the chain; nil means success
		wantInExpl string // substring of Explain(err)
	}{
		{name: "pinned", certPEM: good, keyPEM: goodKey, opts: ClientOptions{Fingerprint: goodFP}},
		{name: "pinned upper colon prefix", certPEM: good, keyPEM: goodKey,
			opts: ClientOptions{Fingerprint: "SHA256:" + upperColonFP}},
		{name: "pinned ignores hostname", certPEM: good, keyPEM: goodKey,
			opts: ClientOptions{Fingerprint: goodFP, ServerName: "wrong.example"}},
		{name: "pinned ignores expiry", certPEM: expired, keyPEM: expiredKey,
			opts: ClientOptions{Fingerprint: mustFingerprint(t, expired)}},
		{name: "wrong pin", certPEM: good, keyPEM: goodKey, opts: ClientOptions{Fingerprint: otherFP},
			wantErr: new(*FingerprintMismatchError), wantInExpl: "does not match --fingerprint"},
		{name: "ca", certPEM: good, keyPEM: goodKey, opts: ClientOptions{CAFile: goodCA, ServerName: "localhost"}},
		{name: "ca by ip", certPEM: good, keyPEM: goodKey, opts: ClientOptions{CAFile: goodCA}},
		{name: "ca wrong host", certPEM: good, keyPEM: goodKey,
			opts:    ClientOptions{CAFile: goodCA, ServerName: "wrong.example"},
			wantErr: new(x509.HostnameError), wantInExpl: "valid for [localhost 127.0.0.1], not for wrong.example"},
		{name: "unknown authority", certPEM: good, keyPEM: goodKey,
			opts:    ClientOptions{CAFile: otherCA, ServerName: "localhost"},
			wantErr: new(x509.UnknownAuthorityError), wantInExpl: "--fingerprint"},
		{name: "expired", certPEM: expired, keyPEM: expiredKey,
			opts:    ClientOptions{CAFile: expiredCA, ServerName: "localhost"},
			wantErr: new(x509.CertificateInvalidError), wantInExpl: "server certificate expired at"},
		{name: "not yet valid", certPEM: future, keyPEM: futureKey,
			opts:    ClientOptions{CAFile: futureCA, ServerName: "localhost"},
			wantErr: new(x509.CertificateInvalidError), wantInExpl: "not valid until"},
		{name: "insecure", certPEM: expired, keyPEM: expiredKey,
			opts: ClientOptions{Insecure: true, ServerName: "wrong.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cert, err := tls.X509KeyPair(tt.certPEM, tt.keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			addr := serveTLS(t, ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return &cert, nil
			}))
			cfg, err := ClientConfig(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ServerName == "" {
				cfg.ServerName = "127.0.0.1" // what a dialer derives from the URL host
			}
			state, err := dial(addr, cfg)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("handshake failed: %v", err)
				}
				if state.NegotiatedProtocol != "http/1.1" || state.Version < tls.VersionTLS12 {
					t.Errorf("negotiated %q over TLS %x", state.NegotiatedProtocol, state.Version)
				}
				return
			}
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			if !errors.As(err, tt.wantErr) {
				t.Fatalf("error %v (%T) does not wrap %T", err, err, tt.wantErr)
			}
			wrapped := fmt.Errorf("dial wss://%s: %w", addr, fmt.Errorf("websocket: %w", err))
			expl := Explain(wrapped)
			if !strings.Contains(expl.Error(), tt.wantInExpl) {
				t.Errorf("Explain = %q, want it to mention %q", expl, tt.wantInExpl)
			}
			if !errors.Is(expl, err) {
				t.Error("Explain dropped the original error")
			}
			if m, ok := tt.wantErr.(**FingerprintMismatchError); ok {
				if (*m).Got != goodFP || (*m).Want != otherFP {
					t.Errorf("mismatch Got %s Want %s, want Got %s Want %s", (*m).Got, (*m).Want, goodFP, otherFP)
				}
				for _, w := range []string{goodFP, "does not match --fingerprint " + otherFP, "burrow cert fingerprint"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("mismatch error %q does not mention %q", err, w)
					}
				}
			}
		})
	}
}

func mustFingerprint(t *testing.T, certPEM []byte) string {
	t.Helper()
	fp, err := FingerprintPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

func TestReloadable(t *testing.T) {
	t.Parallel()
	certA, keyA := validPair(t, "localhost")
	certB, keyB := validPair(t, "localhost")
	dir := t.TempDir()
	certFile, keyFile, err := WriteKeyPair(dir, certA, keyA, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReloadable(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, ServerConfig(r.GetCertificate))
	cfg, err := ClientConfig(ClientOptions{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	check := func(step string, want []byte) {
		t.Helper()
		wantFP := mustFingerprint(t, want)
		if got := Fingerprint(r.Leaf()); got != wantFP {
			t.Errorf("%s: Leaf fingerprint %s, want %s", step, got, wantFP)
		}
		state, err := dial(addr, cfg)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if got := Fingerprint(state.PeerCertificates[0]); got != wantFP {
			t.Errorf("%s: server presented %s, want %s", step, got, wantFP)
		}
	}
	check("initial", certA)

	if _, _, err := WriteKeyPair(dir, certB, keyB, true); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	check("after reload", certB)

	for name, write := range map[string]func() error{
		"garbage key":    func() error { return os.WriteFile(keyFile, []byte("garbage"), 0o600) },
		"mismatched key": func() error { _, _, err := WriteKeyPair(dir, certB, keyA, true); return err },
		"missing cert":   func() error { return os.Remove(certFile) },
	} {
		if err := write(); err != nil {
			t.Fatal(err)
		}
		if err := r.Reload(); err == nil {
			t.Fatalf("%s: Reload succeeded", name)
		}
		check("after bad reload: "+name, certB)
	}

	if _, err := NewReloadable(certFile, keyFile); err == nil {
		t.Error("NewReloadable succeeded on a missing certificate")
	}
}

func TestReloadableConcurrent(t *testing.T) {
	t.Parallel()
	certPEM, keyPEM := validPair(t, "localhost")
	r, err := NewReloadable(writePair(t, certPEM, keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 10)
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if c, _ := r.GetCertificate(nil); c == nil || r.Leaf() == nil {
					errc <- errors.New("no certificate during reload")
					return
				}
			}
		})
	}
	for range 10 {
		if err := r.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestWriteKeyPair(t *testing.T) {
	t.Parallel()
	certA, keyA := validPair(t, "localhost")
	certB, keyB := validPair(t, "localhost")
	dir := filepath.Join(t.TempDir(), "nested", "certs")

	certPath, keyPath, err := WriteKeyPair(dir, certA, keyA, false)
	if err != nil {
		t.Fatal(err)
	}
	if certPath != filepath.Join(dir, "cert.pem") || keyPath != filepath.Join(dir, "key.pem") {
		t.Errorf("paths = %s, %s", certPath, keyPath)
	}
	if runtime.GOOS != "windows" {
		for path, want := range map[string]os.FileMode{certPath: 0o644, keyPath: 0o600} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
			}
		}
	}
	if _, err := LoadKeyPair(certPath, keyPath); err != nil {
		t.Errorf("written pair does not load: %v", err)
	}

	// Refuses to overwrite either file, and writes nothing.
	for _, p := range []string{certPath, keyPath} {
		t.Run("refuse "+filepath.Base(p), func(t *testing.T) {
			d := t.TempDir()
			existing := filepath.Join(d, filepath.Base(p))
			if err := os.WriteFile(existing, []byte("keep"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := WriteKeyPair(d, certB, keyB, false)
			if err == nil || !strings.Contains(err.Error(), existing) || !strings.Contains(err.Error(), "--force") {
				t.Fatalf("err = %v, want it to name %s and mention --force", err, existing)
			}
			if entries, _ := os.ReadDir(d); len(entries) != 1 {
				t.Errorf("directory holds %d entries after refusing, want 1", len(entries))
			}
			if got, _ := os.ReadFile(existing); string(got) != "keep" {
				t.Errorf("%s was modified", existing)
			}
		})
	}

	if _, _, err := WriteKeyPair(dir, certB, keyB, true); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	for path, want := range map[string][]byte{certPath: certB, keyPath: keyB} {
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s not replaced: %v", path, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want only cert.pem and key.pem", names)
	}
}

func TestExplain(t *testing.T) {
	t.Parallel()
	now := time.Now()
	certPEM, _ := validPair(t, "a.example", "b.example", "10.0.0.1")
	cert := parseCert(t, certPEM)
	noSANs := &x509.Certificate{}
	expired := &x509.Certificate{NotBefore: now.Add(-2 * time.Hour), NotAfter: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)}
	future := &x509.Certificate{NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)}
	leaf := &x509.Certificate{Raw: []byte("leaf")}
	ca := &x509.Certificate{Raw: []byte("ca"), IsCA: true, Subject: pkix.Name{CommonName: "Old Root"},
		NotBefore: expired.NotBefore, NotAfter: expired.NotAfter}

	tests := []struct {
		name string
		err  error
		want string // prefix of Explain's message; empty means unchanged
	}{
		{"not tls", io.EOF, ""},
		{"plain text", errors.New("connection refused"), ""},
		{"unknown authority", x509.UnknownAuthorityError{Cert: cert},
			"server certificate is signed by an unknown authority; pass --ca FILE or --fingerprint <sha256>"},
		{"hostname", x509.HostnameError{Certificate: cert, Host: "c.example"},
			"server certificate is valid for [a.example b.example 10.0.0.1], not for c.example; " +
				"connect using one of those names or pass --sni"},
		{"hostname no SANs", x509.HostnameError{Certificate: noSANs, Host: "c.example"},
			"server certificate has no subject alternative names"},
		{"expired", x509.CertificateInvalidError{Cert: expired, Reason: x509.Expired},
			"server certificate expired at 2024-01-02T03:04:05Z; renew it on the server"},
		{"not yet valid", x509.CertificateInvalidError{Cert: future, Reason: x509.Expired},
			"server certificate is not valid until"},
		{"expired CA", &tls.CertificateVerificationError{
			UnverifiedCertificates: []*x509.Certificate{leaf},
			Err:                    x509.CertificateInvalidError{Cert: ca, Reason: x509.Expired},
		}, `certificate authority "Old Root" of the server certificate expired at`},
		{"other invalid", x509.CertificateInvalidError{Cert: cert, Reason: x509.IncompatibleUsage},
			"server certificate could not be verified"},
		{"verification wrapping unknown authority", &tls.CertificateVerificationError{
			UnverifiedCertificates: []*x509.Certificate{cert},
			Err:                    x509.UnknownAuthorityError{Cert: cert},
		}, "server certificate is signed by an unknown authority"},
		{"mismatch", &FingerprintMismatchError{Got: "aa", Want: "bb"},
			"server certificate fingerprint aa does not match --fingerprint bb"},
		{"plain http", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"},
			"server did not answer with TLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for depth := range 4 {
				err := tt.err
				for i := range depth {
					err = fmt.Errorf("layer %d: %w", i, err)
				}
				got := Explain(err)
				if tt.want == "" {
					if got != err {
						t.Errorf("depth %d: Explain changed %v into %v", depth, err, got)
					}
					continue
				}
				if !strings.HasPrefix(got.Error(), tt.want) {
					t.Errorf("depth %d: Explain = %q, want prefix %q", depth, got, tt.want)
				}
				if !errors.Is(got, err) {
					t.Errorf("depth %d: Explain did not keep %v wrapped", depth, err)
				}
				if strings.Contains(got.Error(), "\n") {
					t.Errorf("depth %d: Explain = %q is not one line", depth, got)
				}
			}
		})
	}
	if Explain(nil) != nil {
		t.Error("Explain(nil) != nil")
	}
}

// TestVerifyNamesIP: Verify checks the name the client meant, also when
// it is an IP address, which the handshake's SNI (and so cs.ServerName)
// does not carry: a certificate for another name is refused.
func TestVerifyNamesIP(t *testing.T) {
	certPEM, keyPEM, err := GenerateSelfSigned([]string{"other.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}} // ServerName "": an IP, not in SNI
	if err := Verify(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}, cs); err == nil {
		t.Fatal("a certificate for other.example verified for 127.0.0.1")
	}
	if err := Verify(&tls.Config{RootCAs: roots, ServerName: "other.example"}, cs); err != nil {
		t.Fatalf("the certificate for its own name: %v", err)
	}
	known := &KnownServers{Path: filepath.Join(t.TempDir(), "known")}
	cfg, err := ClientConfig(ClientOptions{Known: known, Server: "127.0.0.1:443"})
	if err != nil {
		t.Fatal(err)
	}
	// Not under system roots either way; what matters is that the name is 127.0.0.1, not empty.
	if err := cfg.VerifyConnection(cs); err == nil {
		t.Fatal("known-servers verification passed an unknown certificate")
	}
}
