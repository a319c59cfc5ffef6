package daemon

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
)

func TestRunRefusesBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeCert(t, dir, certValidity)
	authFile := filepath.Join(dir, "users.toml")
	if err := server.AddUser(authFile, "alice", "pw", nil); err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })
	good := Config{
		Listen:   "127.0.0.1:0",
		CertFile: filepath.Join(dir, certs.CertFileName),
		KeyFile:  filepath.Join(dir, certs.KeyFileName),
		AuthFile: authFile,
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no authfile", func(c *Config) { c.AuthFile = "" }, "--authfile is required"},
		{"bad trusted proxy", func(c *Config) { c.TrustedProxies = []string{"lan"} }, `--trusted-proxy "lan"`},
		{"bad tls", func(c *Config) { c.TLS = "maybe" }, `--tls "maybe": want on or off`},
		{"plain on the network", func(c *Config) { c.TLS = "off"; c.Listen = ":0" }, "--tls off serves plain HTTP"},
		{"no certificate", func(c *Config) { c.CertFile, c.KeyFile = "", "" }, "the server needs a certificate"},
		{"two certificate sources", func(c *Config) { c.SelfSigned = true }, "are alternatives; pass one"},
		{"cert without key", func(c *Config) { c.KeyFile = "" }, "--tls-cert and --tls-key go together"},
		{"bad backend", func(c *Config) { c.Backend = "ftp://site" }, `--backend "ftp://site"`},
		{"missing users file", func(c *Config) { c.AuthFile = filepath.Join(dir, "none.toml") }, "none.toml"},
		{"files root not a dir", func(c *Config) { c.FilesRoot = authFile }, "is not a directory"},
		{"port taken", func(c *Config) { c.Listen = taken.Addr().String() }, "cannot listen on " + taken.Addr().String()},
		{"admin port taken", func(c *Config) { c.Admin = taken.Addr().String() }, "cannot listen on --admin " + taken.Addr().String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			before := cfg
			err := Run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run = %v, want an error containing %q", err, tt.want)
			}
			if cfg.Listen != before.Listen || cfg.TLS != before.TLS || cfg.Logger != nil {
				t.Fatalf("Run changed the caller's Config: %+v", cfg)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	t.Parallel()
	var zero Config
	got := zero.withDefaults()
	if got.Listen != ":8443" || got.Path != "/" || got.TLS != "on" || got.StateDir != "/var/lib/burrow" ||
		got.HeaderTimeout != 10*time.Second || got.ShutdownTimeout != 30*time.Second || got.Logger == nil || got.Notify == nil {
		t.Fatalf("defaults: %+v", got)
	}
	if zero.Listen != "" || zero.Logger != nil {
		t.Fatal("withDefaults changed its receiver")
	}
	if d := (Config{ShutdownTimeout: -1}).withDefaults().ShutdownTimeout; d != 0 {
		t.Fatalf("negative ShutdownTimeout became %v, want 0 (do not wait)", d)
	}
	domains := []string{"a.example"}
	c := Config{Domains: domains}.withDefaults()
	c.Domains[0] = "changed"
	if domains[0] != "a.example" {
		t.Fatal("the Config's Domains share the caller's slice")
	}
}

func TestRunServesAndStops(t *testing.T) {
	t.Parallel()
	f := startFixture(t, certValidity, nil)
	if code, body := f.get(t, "/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	if _, err := f.dial(t, "alice", "wrong"); err == nil {
		t.Fatal("a wrong password got a session")
	}
	sess, err := f.dial(t, "alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	// The client's dial returns on the 101; the server registers the
	// session just after writing it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, body := f.get(t, "/status")
		if strings.Contains(body, `"user":"alice"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/status does not list alice's session within 10 s: %s", body)
		}
	}
	rec := f.log.wait(t, "listening", 1)
	if rec.attrs["users"] != "1" || rec.attrs["fingerprint"] != certs.Fingerprint(f.leaf) {
		t.Fatalf("listening line: %v", rec.attrs)
	}
	start := time.Now()
	if err := f.stop(t); err != nil {
		t.Fatalf("Run after its context ended: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown with no open stream took %v", d)
	}
	f.log.wait(t, "stopped", 1)
	if f.log.count("shutdown cut open streams") != 0 {
		t.Fatal("a shutdown with no streams cut some")
	}
	if got := f.notify.seen(); got != "ready,stopping (watchdog ended)" {
		t.Fatalf("notifications: %s", got)
	}
	select {
	case <-sess.CloseChan():
	case <-time.After(5 * time.Second):
		t.Fatal("the session outlived the server")
	}
}

// TestShutdownCutsStalledStream holds a stream open through a SIGTERM:
// shutdown waits ShutdownTimeout for it, cuts it, and returns nil.
func TestShutdownCutsStalledStream(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	f := startFixture(t, certValidity, func(c *Config) { c.ShutdownTimeout = timeout })
	target := holdListener(t)
	sess, err := f.dial(t, "alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	st, err := mux.Open(sess, mux.Header{Kind: mux.KindTCP, Target: target}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	if err := f.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d < timeout {
		t.Fatalf("shutdown returned after %v, before its %v timeout, with a stream open", d, timeout)
	}
	rec := f.log.wait(t, "shutting down", 1)
	if rec.attrs["timeout"] != timeout.String() {
		t.Fatalf("shutting down line: %v", rec.attrs)
	}
	f.log.wait(t, "shutdown cut open streams", 1)
	f.log.wait(t, "stopped", 1)
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := st.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("the stalled stream still reads after shutdown: %v", err)
	}
}

// TestReload sends what SIGHUP sends: a new user can log in, a removed
// one's sessions are closed, and a broken file keeps the users that were.
func TestReload(t *testing.T) {
	t.Parallel()
	f := startFixture(t, certValidity, nil)
	if _, err := f.dial(t, "bob", "bob-pw"); err == nil {
		t.Fatal("bob logged in before he was added")
	}
	if err := server.AddUser(f.cfg.AuthFile, "bob", "bob-pw", []string{".*"}); err != nil {
		t.Fatal(err)
	}
	alice, err := f.dial(t, "alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	f.reload <- syscall.SIGHUP
	if rec := f.log.wait(t, "users reloaded", 1); rec.attrs["users"] != "2" || rec.attrs["sessions_closed"] != "0" {
		t.Fatalf("first reload: %v", rec.attrs)
	}
	if _, err := f.dial(t, "bob", "bob-pw"); err != nil {
		t.Fatalf("bob after the reload: %v", err)
	}

	if err := server.RemoveUser(f.cfg.AuthFile, "alice"); err != nil {
		t.Fatal(err)
	}
	f.reload <- syscall.SIGHUP
	if rec := f.log.wait(t, "users reloaded", 2); rec.attrs["users"] != "1" || rec.attrs["sessions_closed"] != "1" {
		t.Fatalf("second reload: %v", rec.attrs)
	}
	select {
	case <-alice.CloseChan():
	case <-time.After(5 * time.Second):
		t.Fatal("alice's session outlived her removal")
	}

	os.WriteFile(f.cfg.AuthFile, []byte("this is [not toml"), 0o600)
	f.reload <- syscall.SIGHUP
	if rec := f.log.wait(t, "reload failed; keeping the previous configuration where it failed", 1); rec.level != 8 {
		t.Fatalf("failed reload logged at %v", rec.level)
	}
	if _, err := f.dial(t, "bob", "bob-pw"); err != nil {
		t.Fatalf("bob after a failed reload: %v", err)
	}
	if ok, failed := f.metric(t, `burrow_reloads_total{result="ok"}`), f.metric(t, `burrow_reloads_total{result="failed"}`); ok != 2 || failed != 1 {
		t.Fatalf("burrow_reloads_total ok=%v failed=%v, want 2 and 1", ok, failed)
	}
	if err := f.stop(t); err != nil {
		t.Fatal(err)
	}
	if got, want := f.notify.seen(), "ready,reloading,ready,reloading,ready,reloading,ready,stopping (watchdog ended)"; got != want {
		t.Fatalf("notifications: %s, want %s", got, want)
	}
}

// TestReloadCertificate replaces the certificate files and reloads: the
// new certificate is served, and the expiry gauge and warning follow it.
func TestReloadCertificate(t *testing.T) {
	t.Parallel()
	f := startFixture(t, certValidity, nil)
	const gauge = "burrow_certificate_expiry_timestamp_seconds"
	if got := f.waitMetric(t, gauge, float64(f.leaf.NotAfter.Unix())); got != float64(f.leaf.NotAfter.Unix()) {
		t.Fatalf("%s = %v, want %d", gauge, got, f.leaf.NotAfter.Unix())
	}
	if f.log.count("the TLS certificate expires soon; renew it") != 0 {
		t.Fatal("a certificate good for two years was reported as expiring")
	}
	fresh := writeCert(t, filepath.Dir(f.cfg.CertFile), 48*time.Hour)
	f.reload <- syscall.SIGHUP
	rec := f.log.wait(t, "certificate reloaded", 1)
	if rec.attrs["fingerprint"] != certs.Fingerprint(fresh) {
		t.Fatalf("reloaded fingerprint %s, want the new certificate's", rec.attrs["fingerprint"])
	}
	if got := f.waitMetric(t, gauge, float64(fresh.NotAfter.Unix())); got != float64(fresh.NotAfter.Unix()) {
		t.Fatalf("%s after reload = %v, want %d", gauge, got, fresh.NotAfter.Unix())
	}
	if rec := f.log.wait(t, "the TLS certificate expires soon; renew it", 1); rec.attrs["left"] != "48h0m0s" {
		t.Fatalf("expiry warning: %v", rec.attrs)
	}
	if got := servedFingerprint(t, f.addr); got != certs.Fingerprint(fresh) {
		t.Fatalf("served fingerprint %s, want the new certificate's", got)
	}
}

// TestCertificatePolling changes the files without a signal, as certbot
// renewing in place does.
func TestCertificatePolling(t *testing.T) {
	t.Parallel()
	f := startFixture(t, certValidity, func(c *Config) { c.certPoll = 20 * time.Millisecond })
	fresh := writeCert(t, filepath.Dir(f.cfg.CertFile), 72*time.Hour)
	rec := f.log.wait(t, "certificate files changed; reloaded", 1)
	if rec.attrs["fingerprint"] != certs.Fingerprint(fresh) {
		t.Fatalf("polled fingerprint %s, want the new certificate's", rec.attrs["fingerprint"])
	}
	if got := f.waitMetric(t, "burrow_certificate_expiry_timestamp_seconds", float64(fresh.NotAfter.Unix())); got != float64(fresh.NotAfter.Unix()) {
		t.Fatalf("gauge after polling = %v, want %d", got, fresh.NotAfter.Unix())
	}
	os.WriteFile(f.cfg.CertFile, []byte("not a certificate"), 0o600)
	f.log.wait(t, "certificate files changed but do not load; keeping the previous one", 1)
	if got := servedFingerprint(t, f.addr); got != certs.Fingerprint(fresh) {
		t.Fatalf("after a broken file the server serves %s, want the previous certificate", got)
	}
}

func TestExpiringCertificateWarnsAtStart(t *testing.T) {
	t.Parallel()
	f := startFixture(t, 24*time.Hour, nil)
	rec := f.log.wait(t, "the TLS certificate expires soon; renew it", 1)
	if rec.level != 4 || rec.attrs["not_after"] != f.leaf.NotAfter.UTC().String() {
		t.Fatalf("expiry warning: level %v, %v", rec.level, rec.attrs)
	}
	if got := f.waitMetric(t, "burrow_certificate_expiry_timestamp_seconds", float64(f.leaf.NotAfter.Unix())); got != float64(f.leaf.NotAfter.Unix()) {
		t.Fatalf("gauge = %v, want %d", got, f.leaf.NotAfter.Unix())
	}
}

// TestListenerFailureEndsRun breaks the tunnel listener under a running
// server: Run reports it instead of serving on without it.
func TestListenerFailureEndsRun(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, newLogRecorder(), nil).withDefaults()
	cfg.Admin = ""
	p, err := start(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.ln.Close()
	err = p.run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "server stopped: ") {
		t.Fatalf("run with a closed listener = %v", err)
	}
}

func servedFingerprint(t *testing.T, addr string) string {
	t.Helper()
	c, err := tlsDial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return certs.Fingerprint(c.ConnectionState().PeerCertificates[0])
}

func tlsDial(addr string) (*tls.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
}
