package harness

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Burrow is the burrow binary built from this module, and runs it.
type Burrow struct {
	path string
}

// Main is the body of a TestMain: it builds cmd/burrow into a temporary
// directory, sets *bin to it, runs the tests and removes the directory. It
// returns the code for os.Exit:
//
//	var burrow harness.Burrow
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m, &burrow)) }
func Main(m *testing.M, bin *Burrow) int {
	dir, err := os.MkdirTemp("", "burrow-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	b, err := Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	*bin = b
	// The binaries keep the user's known servers under the configuration
	// directory: theirs start empty and are thrown away.
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	// And the transports that got through, per server and proxy, under
	// the cache directory.
	os.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	return m.Run()
}

// Build builds cmd/burrow with the go tool into dir.
func Build(dir string) (Burrow, error) {
	b := Burrow{path: filepath.Join(dir, "burrow")}
	goTool, err := exec.LookPath("go")
	if err != nil {
		return Burrow{}, fmt.Errorf("the go tool is needed to build the binary: %w", err)
	}
	build := exec.Command(goTool, "build", "-o", b.path, "github.com/burrowtun/burrow/cmd/burrow")
	if out, err := build.CombinedOutput(); err != nil {
		return Burrow{}, fmt.Errorf("building burrow: %v\n%s", err, out)
	}
	return b, nil
}

// Path is the binary's file name, for a test that runs it another way.
func (b Burrow) Path() string { return b.path }

// Start runs the binary with args. stdin, if not empty, is its standard
// input; env is added to a copy of the test's environment without any
// BURROW_* variables. Output goes to in-memory buffers and to
// name.log in the test's temp dir. The process is SIGKILLed by PID and
// waited for when the test ends, and its output is logged if the test failed.
func (b Burrow) Start(tb testing.TB, name, stdin string, env []string, args ...string) *Proc {
	tb.Helper()
	var in io.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	return b.StartIn(tb, name, in, env, args...)
}

// StartIn is Start with stdin read from in (none when nil), which may be a
// pipe the test keeps open.
func (b Burrow) StartIn(tb testing.TB, name string, in io.Reader, env []string, args ...string) *Proc {
	tb.Helper()
	cmd := exec.Command(b.path, args...)
	cmd.Env = append(CleanEnv(), env...)
	if in != nil {
		cmd.Stdin = in
	}
	return start(tb, name, cmd, 0, strings.Join(args, " "), 0)
}

// Run runs a short burrow command to completion and returns its stdout; it
// fails the test if the command fails.
func (b Burrow) Run(tb testing.TB, stdin string, args ...string) string {
	tb.Helper()
	cmd := exec.Command(b.path, args...)
	cmd.Env = CleanEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("burrow %s: %v", strings.Join(args, " "), err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			tb.Fatalf("burrow %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, &stdout, &stderr)
		}
	case <-time.After(ExitTimeout):
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-done
		tb.Fatalf("burrow %s did not finish within %v", strings.Join(args, " "), ExitTimeout)
	}
	return stdout.String()
}

// CertPair is a certificate and key on disk.
type CertPair struct {
	CertFile, KeyFile string
	Fingerprint       string // as printed by burrow cert
}

// Lines that burrow prints or logs, for WaitLog and CountLog.
var (
	FingerprintLine   = regexp.MustCompile(`(?m)^fingerprint: ([0-9a-f]{64})$`) // burrow cert, on stdout
	ListeningLine     = regexp.MustCompile(`msg=listening addr=(\S+) fingerprint=([0-9a-f]+)`)
	ForwardLine       = regexp.MustCompile(`msg="forward listening" local=(\S+) remote=(\S+)`)
	ConnectedLine     = regexp.MustCompile(`msg=connected `)
	SessionOpenedLine = regexp.MustCompile(`msg="session opened"`)
	AdminLine         = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)
)

// NewCert makes a self-signed certificate for hosts with 'burrow cert
// self-signed' and checks that 'burrow cert fingerprint' agrees with the
// fingerprint it printed.
func (b Burrow) NewCert(tb testing.TB, hosts ...string) CertPair {
	tb.Helper()
	dir := tb.TempDir()
	args := []string{"cert", "self-signed", "--out", dir}
	for _, h := range hosts {
		args = append(args, "--host", h)
	}
	out := b.Run(tb, "", args...)
	m := FingerprintLine.FindStringSubmatch(out)
	if m == nil {
		tb.Fatalf("burrow cert self-signed printed no fingerprint line:\n%s", out)
	}
	c := CertPair{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"), Fingerprint: m[1]}
	for _, f := range []string{c.CertFile, c.KeyFile} {
		if _, err := os.Stat(f); err != nil {
			tb.Fatalf("burrow cert self-signed did not write %s: %v", f, err)
		}
	}
	if !strings.Contains(out, "certificate: "+c.CertFile) || !strings.Contains(out, "key: "+c.KeyFile) {
		tb.Errorf("burrow cert self-signed output does not name the files it wrote:\n%s", out)
	}
	out = b.Run(tb, "", "cert", "fingerprint", c.CertFile)
	if got := strings.TrimSpace(out); got != c.Fingerprint {
		tb.Fatalf("burrow cert fingerprint printed %q, want the bare fingerprint %s, as --fingerprint takes it", out, c.Fingerprint)
	}
	return c
}

// NewUser adds a user to authfile (created if missing) with 'burrow user
// add', the password read from stdin. No allow expressions means any target.
func (b Burrow) NewUser(tb testing.TB, authfile, name, pass string, allow ...string) {
	tb.Helper()
	args := []string{"user", "add", "--authfile", authfile, "--password-stdin"}
	for _, a := range allow {
		args = append(args, "--allow", a)
	}
	args = append(args, name)
	b.Run(tb, pass+"\n", args...)
}

// Server is a running burrow server.
type Server struct {
	*Proc
	Addr     string // host:port it listens on
	URL      string // wss://addr
	Cert     CertPair
	Authfile string
}

// StartServer starts 'burrow server' on 127.0.0.1:0 (or on --listen if args
// has one) with cert and authfile, and waits until it is listening.
func (b Burrow) StartServer(tb testing.TB, cert CertPair, authfile string, args ...string) *Server {
	tb.Helper()
	listen := "127.0.0.1:0"
	for i, a := range args {
		if a == "--listen" && i+1 < len(args) {
			listen = ""
		}
	}
	full := []string{"server", "--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile, "--authfile", authfile}
	if listen != "" {
		full = append(full, "--listen", listen)
	}
	full = append(full, args...)
	p := b.Start(tb, "server", "", nil, full...)
	m := p.WaitLog(tb, ListeningLine, StartTimeout)
	if m[2] != cert.Fingerprint {
		tb.Errorf("server logged fingerprint %s, burrow cert printed %s", m[2], cert.Fingerprint)
	}
	return &Server{Proc: p, Addr: m[1], URL: "wss://" + m[1], Cert: cert, Authfile: authfile}
}

// AdminAddr is the address of the server's --admin listener, from its log.
func (s *Server) AdminAddr(tb testing.TB) string {
	tb.Helper()
	return s.WaitLog(tb, AdminLine, StartTimeout)[1]
}

// StartClient starts 'burrow client' with the credentials in BURROW_AUTH,
// flags (trust and tuning) and remotes, waits until it has bound every
// forward and connected, and returns the local address of each forward in
// the order of remotes.
func (b Burrow) StartClient(tb testing.TB, url, auth string, flags []string, remotes ...string) (*Proc, []string) {
	tb.Helper()
	args := append([]string{"client"}, flags...)
	args = append(args, url)
	args = append(args, remotes...)
	p := b.Start(tb, "client", "", []string{"BURROW_AUTH=" + auth}, args...)
	lines := p.WaitLogCount(tb, ForwardLine, len(remotes), StartTimeout)
	locals := make([]string, len(remotes))
	for i, m := range lines {
		locals[i] = m[1]
	}
	p.WaitLog(tb, ConnectedLine, StartTimeout)
	return p, locals
}

// Tunnel is a server with one user and a client connected to it.
type Tunnel struct {
	Server *Server
	Client *Proc
	Locals []string // local address of each forward
}

// The user StartTestServer puts in its users file.
const (
	TestUser = "alice"
	TestPass = "correct horse battery staple"
)

// StartTestServer makes a certificate for localhost and 127.0.0.1 and a
// users file holding TestUser, allowed to reach the targets matching allow
// (any target if empty), and starts a server with them and args.
func (b Burrow) StartTestServer(tb testing.TB, allow []string, args ...string) *Server {
	tb.Helper()
	cert := b.NewCert(tb, "localhost", "127.0.0.1")
	authfile := filepath.Join(tb.TempDir(), "users.json")
	b.NewUser(tb, authfile, TestUser, TestPass, allow...)
	return b.StartServer(tb, cert, authfile, args...)
}

// StartTunnel starts a test server (see StartTestServer) with serverArgs
// and a client of it, pinning its fingerprint, with clientArgs and the
// forwards remotes.
func (b Burrow) StartTunnel(tb testing.TB, allow []string, serverArgs, clientArgs []string, remotes ...string) *Tunnel {
	tb.Helper()
	srv := b.StartTestServer(tb, allow, serverArgs...)
	flags := append([]string{"--fingerprint", srv.Cert.Fingerprint}, clientArgs...)
	client, locals := b.StartClient(tb, srv.URL, TestUser+":"+TestPass, flags, remotes...)
	return &Tunnel{Server: srv, Client: client, Locals: locals}
}
