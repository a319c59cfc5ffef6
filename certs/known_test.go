package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKnownServersCheck(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "config", "burrow")
	path := filepath.Join(dir, "known_servers")
	a := strings.Repeat("ab", 32)
	b := strings.Repeat("cd", 32)
	var recorded []string
	k := &KnownServers{Path: path, Recorded: func(server, fp string) { recorded = append(recorded, server+" "+fp) }}

	// Unknown, not accepting: refused with what to do, nothing written.
	err := k.Check("tunnel.example:443", a)
	var unknown *UnknownServerError
	if !errors.As(err, &unknown) || unknown.Server != "tunnel.example:443" || unknown.Fingerprint != a || unknown.Path != path {
		t.Fatalf("Check of an unknown server = %v, want an UnknownServerError naming it", err)
	}
	for _, want := range []string{"tunnel.example:443", a, path, "--accept-new"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not mention %q", err, want)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refusing an unknown server created the file (%v)", err)
	}

	// Accepting: recorded, file and directory private.
	k.AcceptNew = true
	if err := k.Check("tunnel.example:443", strings.ToUpper(a)); err != nil {
		t.Fatalf("Check with AcceptNew: %v", err)
	}
	if len(recorded) != 1 || recorded[0] != "tunnel.example:443 "+a {
		t.Fatalf("Recorded calls = %q, want one for the new server", recorded)
	}
	data, _ := os.ReadFile(path)
	if string(data) != "tunnel.example:443 "+a+"\n" {
		t.Fatalf("file = %q", data)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode().Perm(), err, want)
		}
	}

	// Known and the same: silent, nothing recorded again, even with AcceptNew.
	if err := k.Check("tunnel.example:443", a); err != nil {
		t.Fatalf("second Check: %v", err)
	}
	if len(recorded) != 1 {
		t.Fatalf("a known server was recorded again: %q", recorded)
	}

	// A changed key is refused whatever AcceptNew says, naming both keys and the line.
	err = k.Check("tunnel.example:443", b)
	var changed *ChangedKeyError
	if !errors.As(err, &changed) || changed.Recorded != a || changed.Got != b || changed.Line != 1 {
		t.Fatalf("Check with a new key = %v, want a ChangedKeyError with both fingerprints at line 1", err)
	}
	for _, want := range []string{a, b, path, "line 1", "--accept-new"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not mention %q", err, want)
		}
	}

	// Another port is another server.
	if err := k.Check("tunnel.example:8443", b); err != nil {
		t.Fatalf("another port: %v", err)
	}
	k.AcceptNew = false
	if err := k.Check("tunnel.example:8443", b); err != nil {
		t.Fatalf("the server recorded second: %v", err)
	}
	if err := k.Check("tunnel.example:8443", a); !errors.As(err, &changed) || changed.Line != 2 {
		t.Fatalf("the second server with another key = %v, want a ChangedKeyError at line 2", err)
	}
}

func TestKnownServersFile(t *testing.T) {
	t.Parallel()
	a := strings.Repeat("ab", 32)
	b := strings.Repeat("cd", 32)
	tests := []struct {
		name, content string
		server, got   string
		wantErr       string // substring; empty means accepted
		wantFile      string // the file afterwards, if checked
	}{
		{name: "comments and blank lines", content: "# servers\n\n  h:1 " + a + "  \n", server: "h:1", got: a},
		{name: "first line counts", content: "h:1 " + a + "\nh:1 " + b + "\n", server: "h:1", got: b,
			wantErr: "line 1 records fingerprint " + a},
		{name: "colon form", content: "h:1 SHA256:" + strings.Repeat("AB:", 31) + "AB\n", server: "h:1", got: a},
		{name: "ipv6", content: "[::1]:443 " + a + "\n", server: "[::1]:443", got: a},
		{name: "no trailing newline", content: "h:1 " + a, server: "h:2", got: b,
			wantFile: "h:1 " + a + "\nh:2 " + b + "\n"},
		{name: "three fields", content: "h:1 " + a + " extra\n", server: "h:1", got: a, wantErr: "line 1: want"},
		{name: "no port", content: "# x\nh " + a + "\n", server: "h:1", got: a, wantErr: "line 2: want"},
		{name: "bad fingerprint", content: "h:1 xyz\n", server: "h:1", got: a, wantErr: "line 1:"},
		{name: "bad server name", content: "", server: "h 1", got: a, wantErr: "want host:port"},
		{name: "bad got", content: "", server: "h:1", got: "nope", wantErr: "fingerprint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "known_servers")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			k := &KnownServers{Path: path, AcceptNew: true}
			err := k.Check(tt.server, tt.got)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Check = %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.wantFile != "" {
				if data, _ := os.ReadFile(path); string(data) != tt.wantFile {
					t.Fatalf("file = %q, want %q", data, tt.wantFile)
				}
			}
		})
	}
}

// TestClientConfigKnownServers runs real handshakes: a self-signed server is refused until recorded,
// accepted silently afterwards, and refused once its key changes.
func TestClientConfigKnownServers(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "known_servers")
	first, firstKey := validPair(t, "localhost")
	second, secondKey := validPair(t, "localhost")
	serve := func(certPEM, keyPEM []byte) string {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return serveTLS(t, ServerConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }))
	}
	addr := serve(first, firstKey)
	connect := func(acceptNew bool) error {
		cfg, err := ClientConfig(ClientOptions{Known: &KnownServers{Path: path, AcceptNew: acceptNew},
			Server: "tunnel.example:443", ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = dial(addr, cfg)
		return Explain(err)
	}

	err := connect(false)
	var unknown *UnknownServerError
	if !errors.As(err, &unknown) || unknown.Fingerprint != mustFingerprint(t, first) {
		t.Fatalf("first connection = %v, want an UnknownServerError with the server's fingerprint", err)
	}
	var expl *ExplainedError
	if !errors.As(err, &expl) || expl.Message != unknown.Error() {
		t.Errorf("Explain gave %v, want the refusal's own message", err)
	}
	if err := connect(true); err != nil {
		t.Fatalf("connection with AcceptNew: %v", err)
	}
	if err := connect(false); err != nil {
		t.Fatalf("connection to the recorded server: %v", err)
	}

	addr = serve(second, secondKey)
	err = connect(true)
	var changed *ChangedKeyError
	if !errors.As(err, &changed) || changed.Recorded != mustFingerprint(t, first) || changed.Got != mustFingerprint(t, second) {
		t.Fatalf("connection to the server with a new key = %v, want a ChangedKeyError naming both", err)
	}
}

// TestVerifyOrKnownKeepsOtherChecks: a certificate a root vouches for is accepted without a record, one that
// fails for another reason than an unknown authority is refused as without known servers, and in neither
// case is the file read or written.
func TestVerifyOrKnownKeepsOtherChecks(t *testing.T) {
	t.Parallel()
	certPEM, _ := validPair(t, "localhost")
	leaf := parseCert(t, certPEM)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	dir := t.TempDir()
	known := &KnownServers{Path: filepath.Join(dir, "sub", "known_servers"), AcceptNew: true}
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, ServerName: "localhost"}
	if err := verifyOrKnown(cs, roots, known, "h:1"); err != nil {
		t.Fatalf("a vouched-for certificate: %v", err)
	}
	cs.ServerName = "wrong.example"
	var hostErr x509.HostnameError
	if err := verifyOrKnown(cs, roots, known, "h:1"); !errors.As(err, &hostErr) {
		t.Fatalf("a vouched-for certificate for another name = %v, want a HostnameError", err)
	}
	if err := verifyOrKnown(tls.ConnectionState{}, roots, known, "h:1"); err == nil {
		t.Fatal("no certificate accepted")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the known servers file was touched: %v", entries)
	}
}

func FuzzParseKnownServers(f *testing.F) {
	f.Add([]byte("# c\nh:1 " + strings.Repeat("ab", 32) + "\n[::1]:443 SHA256:" + strings.Repeat("AB:", 31) + "AB"))
	f.Add([]byte("h 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseKnownServers(data)
		if err != nil {
			return
		}
		for _, e := range entries {
			if !validServer(e.server) || len(e.fingerprint) != 32 || e.line < 1 {
				t.Fatalf("accepted entry %+v", e)
			}
		}
	})
}
