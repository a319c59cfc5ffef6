//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
	"golang.org/x/crypto/bcrypt"
)

// The processes of the benchmark harness: burrow, iperf3, sshd and ssh,
// each started here, watched through /proc, and SIGKILLed by PID when the
// test (or benchmark) that started it ends. Every process also gets
// PR_SET_PDEATHSIG, so none outlives a harness that is itself killed
// (go test -timeout, ^C).

// bproc is a process started by the harness.
type bproc struct {
	name string
	argv []string
	cmd  *exec.Cmd
	out  harness.SyncBuffer // stdout and stderr together
	done chan struct{}
}

func (p *bproc) pid() int { return p.cmd.Process.Pid }

func (p *bproc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startBench runs argv with env added to a copy of the environment without
// BURROW_* variables. ns, when set, is a network namespace to run it in
// (ip netns exec, which execs the command: the PID is the command's).
func startBench(tb testing.TB, name, ns string, env []string, argv ...string) *bproc {
	tb.Helper()
	if ns != "" {
		argv = append([]string{ipTool(), "netns", "exec", ns}, argv...)
	}
	p := &bproc{name: name, argv: argv, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(harness.CleanEnv(), env...)
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s (%s): %v", name, strings.Join(argv, " "), err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.stop(tb)
		if tb.Failed() {
			out := p.out.String()
			if len(out) > 4096 {
				out = "..." + out[len(out)-4096:]
			}
			tb.Logf("%s (pid %d: %s) output:\n%s", name, p.pid(), strings.Join(argv, " "), out)
		}
	})
	return p
}

// stop SIGKILLs the process by PID unless it has exited, and waits for it.
func (p *bproc) stop(tb testing.TB) {
	if !p.exited() {
		if err := syscall.Kill(p.pid(), syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			tb.Errorf("kill %s (pid %d): %v", p.name, p.pid(), err)
		}
	}
	select {
	case <-p.done:
	case <-time.After(harness.ExitTimeout):
		tb.Errorf("%s (pid %d) still running %v after SIGKILL", p.name, p.pid(), harness.ExitTimeout)
	}
}

// waitOutput polls the output until re matches and returns the submatches.
func (p *bproc) waitOutput(tb testing.TB, re *regexp.Regexp, n int, timeout time.Duration) [][]string {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		exited := p.exited()
		if m := re.FindAllStringSubmatch(p.out.String(), -1); len(m) >= n {
			return m[:n]
		}
		if exited {
			tb.Fatalf("%s exited before printing %q:\n%s", p.name, re, p.out.String())
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not print %d lines matching %q within %v", p.name, n, re, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ipTool() string {
	for _, p := range []string{"ip", "/usr/sbin/ip", "/sbin/ip"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	return "ip"
}

// lookTool finds a program in PATH or the sbin directories, or skips.
func lookTool(tb testing.TB, name, pkg string) string {
	tb.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	tb.Skipf("%s is not installed (Debian package %s; make bench installs it through .ci/deps.sh)", name, pkg)
	return ""
}

// runTimeout runs argv to completion within timeout and returns its
// stdout; stderr comes back in the error.
func runTimeout(timeout time.Duration, env []string, stdin string, argv ...string) ([]byte, error) {
	out, _, err := runMeasured(timeout, env, stdin, argv...)
	return out, err
}

// runMeasured is runTimeout that also returns the CPU time (user +
// system) of the process and of the children it waited for.
func runMeasured(timeout time.Duration, env []string, stdin string, argv ...string) ([]byte, float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(harness.CleanEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var cpu float64
	if cmd.ProcessState != nil {
		cpu = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (killed after %v)", err, timeout)
		}
		return stdout.Bytes(), cpu, fmt.Errorf("%s: %w; stderr: %s", strings.Join(argv, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), cpu, nil
}

// ---- /proc ----

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the CPU time (user + system) the process has used.
func procCPU(pid int) (float64, error) {
	return procStatCPU(pid, false)
}

// procCPUWithChildren is procCPU plus the CPU time of the children the
// process has waited for (sshd's finished connection processes).
func procCPUWithChildren(pid int) (float64, error) {
	return procStatCPU(pid, true)
}

// procStat returns the fields of /proc/PID/stat after the command name,
// at least n of them: the state is f[0], field 4 (the parent) f[1].
func procStat(pid, n int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// The command name is in parentheses and may hold anything: fields
	// are counted from the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < n {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

func procStatCPU(pid int, children bool) (float64, error) {
	// utime, stime, cutime and cstime are fields 14 to 17.
	f, err := procStat(pid, 15)
	if err != nil {
		return 0, err
	}
	fields := f[11:13]
	if children {
		fields = f[11:15]
	}
	var ticks int64
	for _, v := range fields {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return float64(ticks) / clockTicks, nil
}

// procStatusKiB returns a "Vm..." line of /proc/PID/status in KiB.
func procStatusKiB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kib, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
			return strconv.ParseInt(kib, 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// openFiles counts a process's open file descriptors.
func openFiles(pid int) int {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(fds)
}

// procPPID returns the parent of a process.
func procPPID(pid int) (int, error) {
	f, err := procStat(pid, 2)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(f[1])
}

// descendants returns the PIDs of every live descendant of pid (sshd's
// per-connection processes), not pid itself.
func descendants(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, err := procPPID(p); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < len(entries) {
		p := queue[0]
		queue = queue[1:]
		out = append(out, children[p]...)
		queue = append(queue, children[p]...)
	}
	return out
}

// ownsListener reports whether process pid holds a TCP socket listening on
// port, as seen in the process's own network namespace.
func ownsListener(pid, port int) bool {
	inodes := map[string]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(data)) {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(p) == port {
				inodes[f[9]] = true
			}
		}
	}
	if len(inodes) == 0 {
		return false
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		if inode, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(inode, "]")] {
			return true
		}
	}
	return false
}

// randomPort is a port for programs that cannot take a listener or port 0
// (sshd, ssh -L, iperf3): below Linux's ephemeral range, retried by the
// callers when it is taken.
func randomPort() int { return 10000 + mathrand.IntN(22000) }

// ---- burrow ----

const (
	benchUser = "bench"
	benchPass = "bench-password"
)

// benchCreds is a certificate and a users file made by the binary.
type benchCreds struct {
	certFile, keyFile, fingerprint, authfile string
}

// newBenchCreds makes a self-signed certificate for hosts and a users file
// holding benchUser, allowed anywhere.
func newBenchCreds(tb testing.TB, hosts ...string) benchCreds {
	tb.Helper()
	cert := burrow.NewCert(tb, hosts...)
	c := benchCreds{certFile: cert.CertFile, keyFile: cert.KeyFile,
		fingerprint: cert.Fingerprint, authfile: filepath.Join(filepath.Dir(cert.CertFile), "users.json")}
	burrow.NewUser(tb, c.authfile, benchUser, benchPass)
	return c
}

// withCheapHash rewrites the users file with a bcrypt hash of the lowest
// cost. The memory figures need it: one argon2id verification allocates
// 19 MiB, which the server's heap keeps and then reuses for sessions and
// streams, hiding their cost from VmRSS.
func withCheapHash(tb testing.TB, c benchCreds) benchCreds {
	tb.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(benchPass), bcrypt.MinCost)
	if err != nil {
		tb.Fatal(err)
	}
	data, err := json.Marshal(map[string]any{"users": map[string]any{benchUser: map[string]any{"password": string(hash), "allow": []string{".*"}}}})
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(c.authfile, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return c
}

// benchServer is a running burrow server.
type benchServer struct {
	*bproc
	creds benchCreds
	addr  string // where it listens
	admin string // its admin listener, when started with --admin
}

func (s *benchServer) url() string { return "wss://" + s.addr }

// startBenchServer starts burrow server on listen (in ns, if set) with an
// admin listener on loopback and Go profiles.
func startBenchServer(tb testing.TB, name, ns string, creds benchCreds, listen string, extra ...string) *benchServer {
	tb.Helper()
	args := []string{burrow.Path(), "server", "--listen", listen, "--tls-cert", creds.certFile, "--tls-key", creds.keyFile,
		"--authfile", creds.authfile, "--admin", "127.0.0.1:0", "--pprof"}
	p := startBench(tb, name, ns, nil, append(args, extra...)...)
	m := p.waitOutput(tb, harness.ListeningLine, 1, harness.StartTimeout)[0]
	if m[2] != creds.fingerprint {
		tb.Fatalf("%s serves fingerprint %s, want %s", name, m[2], creds.fingerprint)
	}
	a := p.waitOutput(tb, harness.AdminLine, 1, harness.StartTimeout)[0]
	return &benchServer{bproc: p, creds: creds, addr: m[1], admin: a[1]}
}

// metrics reads the server's Prometheus metrics (the Go collector's
// goroutines, heap and stack figures among them).
func (s *benchServer) metrics() (map[string]float64, error) {
	hc := &http.Client{Timeout: harness.IOTimeout}
	resp, err := hc.Get("http://" + s.admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// startBenchClient starts burrow client against url, pinning the server's
// fingerprint, and returns the local address of each remote.
func startBenchClient(tb testing.TB, name, ns, url string, creds benchCreds, extra []string, remotes ...string) (*bproc, []string) {
	tb.Helper()
	p := launchBenchClient(tb, name, ns, url, creds, extra, remotes...)
	return p, p.clientReady(tb, len(remotes))
}

// launchBenchClient is startBenchClient without the wait, so that many
// clients can connect at once.
func launchBenchClient(tb testing.TB, name, ns, url string, creds benchCreds, extra []string, remotes ...string) *bproc {
	tb.Helper()
	args := append([]string{burrow.Path(), "client", "--fingerprint", creds.fingerprint}, extra...)
	args = append(append(args, url), remotes...)
	return startBench(tb, name, ns, []string{"BURROW_AUTH=" + benchUser + ":" + benchPass}, args...)
}

// clientReady waits until a client listens on its n forwards and is
// connected, and returns the local address of each forward.
func (p *bproc) clientReady(tb testing.TB, n int) []string {
	tb.Helper()
	lines := p.waitOutput(tb, harness.ForwardLine, n, harness.StartTimeout)
	p.waitOutput(tb, harness.ConnectedLine, 1, harness.StartTimeout)
	locals := make([]string, len(lines))
	for i, m := range lines {
		locals[i] = m[1]
	}
	return locals
}

// ---- iperf3 ----

// iperfServer is iperf3 -s.
type iperfServer struct {
	*bproc
	port int
}

// startIperfServer starts iperf3 -s on a random port (bound to bind, or
// every address of ns when bind is empty), retrying when the port is taken.
func startIperfServer(tb testing.TB, ns, bind string) *iperfServer {
	tb.Helper()
	iperf := lookTool(tb, "iperf3", "iperf3")
	for range 20 {
		port := randomPort()
		argv := []string{iperf, "-s", "-p", strconv.Itoa(port), "--forceflush"}
		if bind != "" {
			argv = append(argv, "-B", bind)
		}
		p := startBench(tb, "iperf3 -s", ns, nil, argv...)
		for range 100 {
			if p.exited() || ownsListener(p.pid(), port) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if ownsListener(p.pid(), port) {
			return &iperfServer{bproc: p, port: port}
		}
		p.stop(tb)
		if !strings.Contains(p.out.String(), "in use") {
			tb.Fatalf("iperf3 -s did not start:\n%s", p.out.String())
		}
	}
	tb.Fatal("no free port for iperf3 -s after 20 tries")
	return nil
}

// iperfResult is what one iperf3 client run measured, at the receiver.
type iperfResult struct {
	bps     float64   // all streams together, bits per second
	bytes   int64     // received
	streams []float64 // per stream, bits per second
}

type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		Streams []struct {
			Receiver struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"receiver"`
		} `json:"streams"`
		SumReceived struct {
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

// ---- OpenSSH ----

// benchSSHD is a throwaway sshd on loopback with its own host key and one
// authorized user key.
type benchSSHD struct {
	*bproc
	port    int
	userKey string
	user    string
}

func startBenchSSHD(tb testing.TB) *benchSSHD {
	tb.Helper()
	sshdPath := lookTool(tb, "sshd", "openssh-server")
	keygen := lookTool(tb, "ssh-keygen", "openssh-client")
	lookTool(tb, "ssh", "openssh-client")
	dir := tb.TempDir()
	hostKey, userKey := filepath.Join(dir, "host_key"), filepath.Join(dir, "user_key")
	for _, k := range []string{hostKey, userKey} {
		if _, err := runTimeout(harness.ExitTimeout, nil, "", keygen, "-q", "-t", "ed25519", "-N", "", "-f", k); err != nil {
			tb.Fatal(err)
		}
	}
	pub, err := os.ReadFile(userKey + ".pub")
	if err != nil {
		tb.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		tb.Fatal(err)
	}
	os.MkdirAll("/run/sshd", 0o755) // the privilege separation directory sshd insists on
	me, err := user.Current()
	if err != nil {
		tb.Fatal(err)
	}
	for range 20 {
		port := randomPort()
		config := filepath.Join(dir, "sshd_config")
		os.WriteFile(config, []byte(strings.Join([]string{
			"ListenAddress 127.0.0.1:" + strconv.Itoa(port),
			"HostKey " + hostKey,
			"AuthorizedKeysFile " + authorized,
			"PidFile none",
			"UsePAM no", "StrictModes no", "PermitRootLogin yes",
			"PasswordAuthentication no", "KbdInteractiveAuthentication no",
			"AllowTcpForwarding yes", "Subsystem sftp internal-sftp", "LogLevel ERROR", "",
		}, "\n")), 0o600)
		p := startBench(tb, "sshd", "", nil, sshdPath, "-D", "-e", "-f", config)
		for range 100 {
			if p.exited() || ownsListener(p.pid(), port) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if ownsListener(p.pid(), port) {
			sd := &benchSSHD{bproc: p, port: port, userKey: userKey, user: me.Username}
			// sshd's per-connection processes are its children, not
			// ours: kill them by PID too (ssh clients are killed first,
			// cleanups run last-in first-out).
			tb.Cleanup(func() {
				for _, pid := range descendants(p.pid()) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			return sd
		}
		p.stop(tb)
		if !strings.Contains(p.out.String(), "Address already in use") {
			tb.Fatalf("sshd did not start:\n%s", p.out.String())
		}
	}
	tb.Fatal("no free port for sshd after 20 tries")
	return nil
}

// sshArgs are the options of every ssh the harness runs: the throwaway
// key, no host key checks, no user configuration, no connection sharing.
func (s *benchSSHD) sshArgs(cipher string) []string {
	args := []string{"-F", "/dev/null", "-i", s.userKey, "-p", strconv.Itoa(s.port),
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "Compression=no"}
	if cipher != "" {
		args = append(args, "-c", cipher)
	}
	return args
}

var kexCipher = regexp.MustCompile(`kex: client->server cipher: (\S+) MAC: (\S+)`)

// negotiatedCipher runs one ssh -v command and reads the cipher and MAC
// it agreed on.
func (s *benchSSHD) negotiatedCipher(tb testing.TB, cipher string) string {
	tb.Helper()
	argv := append(append([]string{lookTool(tb, "ssh", "openssh-client"), "-v"}, s.sshArgs(cipher)...), s.user+"@127.0.0.1", "true")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	m := kexCipher.FindStringSubmatch(string(out))
	if m == nil {
		tb.Fatalf("ssh -v did not name its cipher:\n%s", out)
	}
	if m[2] == "<implicit>" {
		return m[1]
	}
	return m[1] + " with " + m[2]
}

// sshForward is a running ssh -N -L with one local port per target.
type sshForward struct {
	*bproc
	sshd   *benchSSHD
	locals []string
}

// startSSHForward runs ssh -N with a -L forward to each target on random
// local ports, retrying when one is taken, and waits until ssh listens on
// all of them.
func startSSHForward(tb testing.TB, sd *benchSSHD, cipher string, targets ...string) *sshForward {
	tb.Helper()
	sshPath := lookTool(tb, "ssh", "openssh-client")
	for range 20 {
		var ports []int
		argv := append([]string{sshPath, "-N", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR"}, sd.sshArgs(cipher)...)
		for _, target := range targets {
			port := randomPort()
			ports = append(ports, port)
			argv = append(argv, "-L", fmt.Sprintf("127.0.0.1:%d:%s", port, target))
		}
		argv = append(argv, sd.user+"@127.0.0.1")
		p := startBench(tb, "ssh -L", "", nil, argv...)
		ready := func() bool {
			for _, port := range ports {
				if !ownsListener(p.pid(), port) {
					return false
				}
			}
			return true
		}
		for range 200 {
			if p.exited() || ready() {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !p.exited() && ready() {
			f := &sshForward{bproc: p, sshd: sd}
			for _, port := range ports {
				f.locals = append(f.locals, fmt.Sprintf("127.0.0.1:%d", port))
			}
			return f
		}
		p.stop(tb)
		if !strings.Contains(p.out.String(), "in use") {
			tb.Fatalf("ssh -L did not start:\n%s", p.out.String())
		}
	}
	tb.Fatal("no free local ports for ssh -L after 20 tries")
	return nil
}

// ---- in-process targets ----

// benchHelperEnv makes the test binary a small target program instead of
// running tests: "hold" accepts connections, answers each one's first byte
// and then holds it open until EOF. The idle-streams measurement needs
// 10,000 connections on the target side, more than the harness may have
// open beside its own 10,000 (RLIMIT_NOFILE), so they live in this helper.
const benchHelperEnv = "BENCH_HELPER"

func init() {
	if os.Getenv(benchHelperEnv) == "hold" {
		os.Exit(holdHelper())
	}
}

func holdHelper() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hold:", err)
		return 1
	}
	fmt.Printf("hold listening %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			fmt.Fprintln(os.Stderr, "hold:", err)
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: bounded by the parent killing us
			continue
		}
		go func() {
			defer c.Close()
			one := make([]byte, 1)
			if _, err := io.ReadFull(c, one); err != nil {
				return
			}
			if _, err := c.Write(one); err != nil {
				return
			}
			io.Copy(io.Discard, c) // until EOF: the connection is idle meanwhile
		}()
	}
}

var holdLine = regexp.MustCompile(`hold listening (\S+)`)

// startHolder starts the hold helper and returns its address.
func startHolder(tb testing.TB) (*bproc, string) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	p := startBench(tb, "hold helper", "", []string{benchHelperEnv + "=hold"}, exe)
	return p, p.waitOutput(tb, holdLine, 1, harness.StartTimeout)[0][1]
}

// startBenchEcho echoes whatever it reads, on the loopback of network
// namespace ns (of this process when "").
func startBenchEcho(tb testing.TB, ns string) string {
	tb.Helper()
	var ln net.Listener
	err := inNetNS(ns, func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return harness.ServeTarget(tb, ln, func(c *net.TCPConn) {
		buf := make([]byte, 16<<10)
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
	})
}

// startSink reads until EOF, then answers with the byte count (8 bytes,
// big-endian) and closes.
func startSink(tb testing.TB) string {
	return harness.StartTarget(tb, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(10 * time.Minute))
		buf := make([]byte, 256<<10)
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, buf)
		if err != nil {
			return
		}
		var b [8]byte
		for i := range 8 {
			b[i] = byte(uint64(n) >> (56 - 8*i))
		}
		c.Write(b[:])
	})
}
