package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// burrowBin is the binary under test, built once by TestMain.
var burrowBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "burrow-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	burrowBin = filepath.Join(dir, "burrow")
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: the go tool is needed to build the binary:", err)
		return 1
	}
	build := exec.Command(goTool, "build", "-o", burrowBin, "github.com/burrowtun/burrow/cmd/burrow")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: building burrow: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// Timeouts. Generous enough for a loaded 2-core machine running the tests in
// parallel, small enough that a hang fails the test rather than the run.
const (
	startTimeout = 15 * time.Second // a process logs that it is ready
	exitTimeout  = 10 * time.Second // a process told to stop, or bound to fail, exits
	ioTimeout    = 20 * time.Second // one small exchange through a tunnel
)

// syncBuffer is a bytes.Buffer safe for one writer and many readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a burrow process started by a test.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer // slog writes here, and the final "burrow: ..." line

	done     chan struct{} // closed when the process has been waited for
	exitCode int           // valid after done; -1 when killed by a signal
	waitErr  error         // valid after done
}

// startProc runs the binary with args. stdin, if not empty, is its standard
// input; env is added to a copy of the test's environment without any
// BURROW_* variables. Output goes to in-memory buffers and to
// name.log in the test's temp dir. The process is SIGKILLed by PID and
// waited for when the test ends, and its output is logged if the test failed.
func startProc(t *testing.T, name, stdin string, env []string, args ...string) *proc {
	t.Helper()
	var in io.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	return startProcIn(t, name, in, env, args...)
}

// startProcIn is startProc with stdin read from in (none when nil), which
// may be a pipe the test keeps open.
func startProcIn(t *testing.T, name string, in io.Reader, env []string, args ...string) *proc {
	t.Helper()
	logFile, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(burrowBin, args...)
	p.cmd.Env = append(cleanEnv(), env...)
	if in != nil {
		p.cmd.Stdin = in
	}
	p.cmd.Stdout = io.MultiWriter(&p.stdout, logFile)
	p.cmd.Stderr = io.MultiWriter(&p.stderr, logFile)
	p.cmd.WaitDelay = 2 * time.Second // bound Wait even if a pipe stays open
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		p.exitCode = p.cmd.ProcessState.ExitCode()
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("%s (pid %d, %s) stdout:\n%s", name, p.cmd.Process.Pid, strings.Join(args, " "), p.stdout.String())
			t.Logf("%s (pid %d) stderr:\n%s", name, p.cmd.Process.Pid, p.stderr.String())
		}
	})
	return p
}

// cleanEnv is the test's environment without BURROW_* variables, which
// would otherwise set flags behind the tests' back.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BURROW_") {
			env = append(env, kv)
		}
	}
	return env
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process (by PID) unless it has already exited,
// and waits for it.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if !p.exited() {
		if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Errorf("kill %s (pid %d): %v", p.name, p.cmd.Process.Pid, err)
		}
	}
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		t.Errorf("%s (pid %d) still running %v after SIGKILL", p.name, p.cmd.Process.Pid, exitTimeout)
	}
}

// signal sends sig to the process by PID.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("signal %v to %s (pid %d): %v", sig, p.name, p.cmd.Process.Pid, err)
	}
}

// waitExit waits up to timeout for the process to exit and returns its exit
// code; it fails the test if the process is still running.
func (p *proc) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	case <-time.After(timeout):
		t.Fatalf("%s (pid %d) did not exit within %v", p.name, p.cmd.Process.Pid, timeout)
		return 0
	}
}

// waitLog polls the process's log (stderr) until re matches, and returns the
// first match's submatches. It fails the test after timeout, or as soon as
// the process exits without the line having appeared.
func (p *proc) waitLog(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	return p.waitLogCount(t, re, 1, timeout)[0]
}

// waitLogCount is waitLog for the first n matches.
func (p *proc) waitLogCount(t *testing.T, re *regexp.Regexp, n int, timeout time.Duration) [][]string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		exited := p.exited() // read before the log, so a last line is not missed
		if m := re.FindAllStringSubmatch(p.stderr.String(), -1); len(m) >= n {
			return m[:n]
		}
		if exited {
			t.Fatalf("%s exited (code %d, %v) before logging %d lines matching %q", p.name, p.exitCode, p.waitErr, n, re)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %d lines matching %q within %v", p.name, n, re, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countLog returns how many times re matches the process's log so far.
func (p *proc) countLog(re *regexp.Regexp) int {
	return len(re.FindAllStringIndex(p.stderr.String(), -1))
}

// runBurrow runs a short burrow command to completion and returns its
// stdout; it fails the test if the command fails.
func runBurrow(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(burrowBin, args...)
	cmd.Env = cleanEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("burrow %s: %v", strings.Join(args, " "), err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("burrow %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, &stdout, &stderr)
		}
	case <-time.After(exitTimeout):
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("burrow %s did not finish within %v", strings.Join(args, " "), exitTimeout)
	}
	return stdout.String()
}

// certPair is a certificate and key on disk.
type certPair struct {
	certFile, keyFile string
	fingerprint       string // as printed by burrow cert
}

var fingerprintLine = regexp.MustCompile(`(?m)^fingerprint: ([0-9a-f]{64})$`)

// newCert makes a self-signed certificate for hosts with 'burrow cert
// self-signed' and checks that 'burrow cert fingerprint' agrees with the
// fingerprint it printed.
func newCert(t *testing.T, hosts ...string) certPair {
	t.Helper()
	dir := t.TempDir()
	args := []string{"cert", "self-signed", "--out", dir}
	for _, h := range hosts {
		args = append(args, "--host", h)
	}
	out := runBurrow(t, "", args...)
	m := fingerprintLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("burrow cert self-signed printed no fingerprint line:\n%s", out)
	}
	c := certPair{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"), fingerprint: m[1]}
	for _, f := range []string{c.certFile, c.keyFile} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("burrow cert self-signed did not write %s: %v", f, err)
		}
	}
	if !strings.Contains(out, "certificate: "+c.certFile) || !strings.Contains(out, "key: "+c.keyFile) {
		t.Errorf("burrow cert self-signed output does not name the files it wrote:\n%s", out)
	}
	out = runBurrow(t, "", "cert", "fingerprint", c.certFile)
	if got := fingerprintLine.FindStringSubmatch(out); got == nil || got[1] != c.fingerprint {
		t.Fatalf("burrow cert fingerprint printed %q, want fingerprint %s", out, c.fingerprint)
	}
	return c
}

// newUser adds a user to authfile (created if missing) with 'burrow user
// add', the password read from stdin. No allow expressions means any target.
func newUser(t *testing.T, authfile, name, pass string, allow ...string) {
	t.Helper()
	args := []string{"user", "add", "--authfile", authfile, "--password-stdin"}
	for _, a := range allow {
		args = append(args, "--allow", a)
	}
	args = append(args, name)
	runBurrow(t, pass+"\n", args...)
}

var (
	listeningLine     = regexp.MustCompile(`msg=listening addr=(\S+) fingerprint=([0-9a-f]+)`)
	forwardLine       = regexp.MustCompile(`msg="forward listening" local=(\S+) remote=(\S+)`)
	connectedLine     = regexp.MustCompile(`msg=connected `)
	sessionOpenedLine = regexp.MustCompile(`msg="session opened"`)
)

// server is a running burrow server.
type server struct {
	*proc
	addr     string // host:port it listens on
	url      string // wss://addr
	cert     certPair
	authfile string
}

// startServer starts 'burrow server' on 127.0.0.1:0 (or on --listen if args
// has one) with cert and authfile, and waits until it is listening.
func startServer(t *testing.T, cert certPair, authfile string, args ...string) *server {
	t.Helper()
	listen := "127.0.0.1:0"
	for i, a := range args {
		if a == "--listen" && i+1 < len(args) {
			listen = ""
		}
	}
	full := []string{"server", "--tls-cert", cert.certFile, "--tls-key", cert.keyFile, "--authfile", authfile}
	if listen != "" {
		full = append(full, "--listen", listen)
	}
	full = append(full, args...)
	p := startProc(t, "server", "", nil, full...)
	m := p.waitLog(t, listeningLine, startTimeout)
	if m[2] != cert.fingerprint {
		t.Errorf("server logged fingerprint %s, burrow cert printed %s", m[2], cert.fingerprint)
	}
	return &server{proc: p, addr: m[1], url: "wss://" + m[1], cert: cert, authfile: authfile}
}

// startClient starts 'burrow client' with the credentials in BURROW_AUTH,
// flags (trust and tuning) and remotes, waits until it has bound every
// forward and connected, and returns the local address of each forward in
// the order of remotes.
func startClient(t *testing.T, url, auth string, flags []string, remotes ...string) (*proc, []string) {
	t.Helper()
	args := append([]string{"client"}, flags...)
	args = append(args, url)
	args = append(args, remotes...)
	p := startProc(t, "client", "", []string{"BURROW_AUTH=" + auth}, args...)
	lines := p.waitLogCount(t, forwardLine, len(remotes), startTimeout)
	locals := make([]string, len(remotes))
	for i, m := range lines {
		locals[i] = m[1]
	}
	p.waitLog(t, connectedLine, startTimeout)
	return p, locals
}

// tunnel is a server with one user and a client connected to it.
type tunnel struct {
	srv    *server
	client *proc
	locals []string // local address of each forward
}

const (
	testUser = "alice"
	testPass = "correct horse battery staple"
)

// startTestServer makes a certificate for localhost and 127.0.0.1 and a
// users file holding testUser, allowed to reach the targets matching allow
// (any target if empty), and starts a server with them and args.
func startTestServer(t *testing.T, allow []string, args ...string) *server {
	t.Helper()
	cert := newCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	newUser(t, authfile, testUser, testPass, allow...)
	return startServer(t, cert, authfile, args...)
}

// startTunnel starts a test server (see startTestServer) with serverArgs
// and a client of it, pinning its fingerprint, with clientArgs and the
// forwards remotes.
func startTunnel(t *testing.T, allow []string, serverArgs, clientArgs []string, remotes ...string) *tunnel {
	t.Helper()
	srv := startTestServer(t, allow, serverArgs...)
	flags := append([]string{"--fingerprint", srv.cert.fingerprint}, clientArgs...)
	client, locals := startClient(t, srv.url, testUser+":"+testPass, flags, remotes...)
	return &tunnel{srv: srv, client: client, locals: locals}
}

// startTarget runs handle for every connection accepted on a new listener
// on 127.0.0.1:0 and returns its address. When the test ends the listener
// and any connection still open are closed, and the handlers are waited for.
func startTarget(t *testing.T, handle func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// startEcho starts a target that echoes everything it reads until EOF, then
// closes its write side.
func startEcho(t *testing.T) string {
	return startTarget(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		buf := make([]byte, 64<<10)
		if _, err := io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf); err != nil {
			return
		}
		c.CloseWrite()
	})
}

// echoRoundTrip sends msg to an echo target through the forward at local,
// half-closes, and checks that exactly msg comes back before EOF.
func echoRoundTrip(t *testing.T, local string, msg []byte) {
	t.Helper()
	if err := echoRoundTripErr(local, msg); err != nil {
		t.Fatal(err)
	}
}

// dialLocal connects to addr, a local port (a forward, the server), with
// ioTimeout as the connection's deadline. The caller closes it.
func dialLocal(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	return c.(*net.TCPConn)
}

// echoRoundTripErr is echoRoundTrip for goroutines other than the test's.
func echoRoundTripErr(local string, msg []byte) error {
	c, err := net.DialTimeout("tcp", local, ioTimeout)
	if err != nil {
		return fmt.Errorf("dial forward %s: %w", local, err)
	}
	defer c.Close()
	if err := echoOver(c.(*net.TCPConn), msg); err != nil {
		return fmt.Errorf("through %s: %w", local, err)
	}
	return nil
}

// exchange sends msg on c and half-closes it, while reading everything
// that comes back until EOF.
func exchange(c *net.TCPConn, msg []byte) ([]byte, error) {
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		c.Close() // unblock the writer
		<-werr
		return got, fmt.Errorf("reading: %w (got %d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		return got, fmt.Errorf("writing: %w", err)
	}
	return got, nil
}

// echoOver sends msg on c to an echo target, half-closes, and checks that
// exactly msg comes back before EOF, all within ioTimeout.
func echoOver(c *net.TCPConn, msg []byte) error {
	c.SetDeadline(time.Now().Add(ioTimeout))
	got, err := exchange(c, msg)
	if err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo: got %d bytes %.40q, want %d bytes %.40q", len(got), got, len(msg), msg)
	}
	return nil
}

// stderrLines splits a process's stderr into slog lines and other lines.
func stderrLines(p *proc) (logLines, other []string) {
	for line := range strings.Lines(p.stderr.String()) {
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
		case strings.HasPrefix(line, "time="):
			logLines = append(logLines, line)
		default:
			other = append(other, line)
		}
	}
	return logLines, other
}
