package integration

// Real OpenSSH through the tunnel: ssh with 'burrow client ... stdio:' as
// its ProxyCommand, and scp through a local forward. sshd runs on loopback
// from a generated config, with throwaway keys, and is stopped by PID.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
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
)

// openSSH is a throwaway OpenSSH server on 127.0.0.1 and what a client
// needs to log in to it.
type openSSH struct {
	port      int
	login     string // the user to log in as: the one running the tests
	clientKey string // private key for ssh -i
	knownHost string // known_hosts file naming the server's key under sshHostAlias
	ssh, scp  string
}

// sshHostAlias is the name the server's host key is known by, whatever
// address and port a connection takes (HostKeyAlias).
const sshHostAlias = "burrow-test-sshd"

// sshTools finds the OpenSSH programs, or skips the test saying what to
// install.
func sshTools(t *testing.T) map[string]string {
	t.Helper()
	tools := map[string]string{}
	for name, pkg := range map[string]string{"sshd": "openssh-server", "ssh": "openssh-client", "scp": "openssh-client", "ssh-keygen": "openssh-client"} {
		p, ok := findExtProgram(name)
		if !ok {
			t.Skipf("%s is not installed (Debian package %s; .ci/deps.sh installs it)", name, pkg)
		}
		tools[name] = p
	}
	return tools
}

// startOpenSSH generates a host key and a client key, writes an
// sshd_config that allows only that key for the current user, and runs
// 'sshd -D -e' on a random loopback port, trying another when the port is
// taken.
func startOpenSSH(t *testing.T) *openSSH {
	t.Helper()
	tools := sshTools(t)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keygen := func(file string) string {
		out, err := exec.Command(tools["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", "burrow-test", "-f", file).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
		pub, err := os.ReadFile(file + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(pub))
	}
	hostKey, clientKey := filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "client_ed25519")
	hostPub, clientPub := keygen(hostKey), keygen(clientKey)
	s := &openSSH{login: me.Username, clientKey: clientKey, ssh: tools["ssh"], scp: tools["scp"],
		knownHost: filepath.Join(dir, "known_hosts")}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, []byte(clientPub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.knownHost, []byte(sshHostAlias+" "+hostPub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd insists on its privilege separation directory.
	if _, err := os.Stat("/run/sshd"); os.IsNotExist(err) {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Logf("cannot create /run/sshd (sshd may refuse to start): %v", err)
		}
	}
	config := filepath.Join(dir, "sshd_config")
	bindFailed := regexp.MustCompile(`Address already in use|Cannot bind any address`)
	for range 10 {
		s.port = randomConfigPort()
		lines := []string{
			"ListenAddress 127.0.0.1:" + strconv.Itoa(s.port),
			"HostKey " + hostKey,
			"AuthorizedKeysFile " + authorized,
			"PidFile " + filepath.Join(dir, "sshd.pid"),
			"UsePAM no",
			"StrictModes no",
			"PermitRootLogin yes", // the tests run as root in CI
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"AllowUsers " + me.Username,
			"Subsystem sftp internal-sftp", // scp speaks SFTP since OpenSSH 9.0
			"LogLevel INFO",
		}
		if err := os.WriteFile(config, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := harness.StartCmd(t, "sshd", exec.Command(tools["sshd"], "-D", "-e", "-f", config), syscall.SIGTERM)
		ready := regexp.MustCompile(`Server listening on 127\.0\.0\.1 port ` + strconv.Itoa(s.port) + `\b`)
		if waitStarted(t, p, readyOnLog(ready), bindFailed) {
			return s
		}
		p.Kill(t)
	}
	t.Fatal("sshd found no free port in 10 tries")
	return nil
}

// options are the ssh options every client here uses: only our key, no
// agent, no config files, and the server's host key checked strictly.
func (s *openSSH) options() []string {
	return []string{
		"-F", "/dev/null",
		"-i", s.clientKey,
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + s.knownHost,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "HostKeyAlias=" + sshHostAlias,
		"-o", "ConnectTimeout=15",
		"-o", "LogLevel=ERROR",
	}
}

// runOpenSSH runs an OpenSSH client program in its own process group and
// returns its stdout and stderr. When it outlives timeout, or has left a
// child behind (a ProxyCommand), the group is SIGKILLed by its id.
func runOpenSSH(t *testing.T, timeout time.Duration, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(harness.CleanEnv(), clearProxyEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		return "", "", err
	}
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // whatever of the group is left
	err = cmd.Wait()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s did not finish within %v: %w", filepath.Base(name), timeout, err)
	}
	return out.String(), errOut.String(), err
}

// shellQuote quotes s for the shell that runs a ProxyCommand, and doubles
// '%', which ssh would otherwise expand.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, "'", `'\''`), "%", "%%") + "'"
}

// TestSSHOpenSSH runs real OpenSSH through the tunnel: ssh with
// 'burrow client ... stdio:%h:%p' as its ProxyCommand runs a command, and
// scp copies 50 MiB through a local forward, checked by SHA-256. ssh
// checks sshd's host key strictly, so it is our sshd that answered.
func TestSSHOpenSSH(t *testing.T) {
	t.Parallel()
	sshd := startOpenSSH(t)
	srv := burrow.StartTestServer(t, nil)
	sshTarget := regexp.QuoteMeta("127.0.0.1:" + strconv.Itoa(sshd.port))

	t.Run("ProxyCommand stdio", func(t *testing.T) {
		token := fmt.Sprintf("hello-%016x", rand.Uint64())
		proxy := strings.Join([]string{
			shellQuote(burrow.Path()), "client",
			"--auth", shellQuote(harness.TestUser + ":" + harness.TestPass),
			"--fingerprint", srv.Cert.Fingerprint,
			srv.URL, "stdio:%h:%p",
		}, " ")
		args := append(sshd.options(), "-o", "ProxyCommand="+proxy,
			"-p", strconv.Itoa(sshd.port), sshd.login+"@127.0.0.1", "echo "+token)
		start := time.Now()
		out, errOut, err := runOpenSSH(t, 30*time.Second, sshd.ssh, args...)
		if err != nil || out != token+"\n" {
			t.Fatalf("ssh through 'burrow client stdio:': %v\nstdout: %q\nstderr: %s", err, out, errOut)
		}
		t.Logf("ssh ran 'echo %s' through the tunnel in %v", token, time.Since(start).Round(time.Millisecond))
		// The ProxyCommand's stderr is the user's terminal: quiet there.
		if strings.Contains(errOut, "level=INFO") {
			t.Errorf("the stdio client logged INFO lines into the ssh session's terminal:\n%s", errOut)
		}
		// The connection went through the server, which dialed sshd.
		srv.WaitLog(t, regexp.MustCompile(`msg="stream opened" .*kind=tcp target=`+sshTarget+`\b`), harness.IOTimeout)
	})

	t.Run("scp 50 MiB through a forward", func(t *testing.T) {
		const size = 50 << 20
		client, locals := burrow.StartClient(t, srv.URL, harness.TestUser+":"+harness.TestPass, []string{"--fingerprint", srv.Cert.Fingerprint},
			"127.0.0.1:0:127.0.0.1:"+strconv.Itoa(sshd.port))
		_, localPort, err := net.SplitHostPort(locals[0])
		if err != nil {
			t.Fatal(err)
		}

		src := filepath.Join(t.TempDir(), "random.bin")
		f, err := os.Create(src)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.New()
		var seed [32]byte
		for i := range seed {
			seed[i] = byte(rand.Uint32())
		}
		rng := rand.NewChaCha8(seed)
		if _, err := io.Copy(io.MultiWriter(f, sum), io.LimitReader(rng, size)); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		want := sum.Sum(nil)
		dst := filepath.Join(t.TempDir(), "copy.bin")

		args := append(sshd.options(), "-P", localPort, src, sshd.login+"@127.0.0.1:"+dst)
		start := time.Now()
		if out, errOut, err := runOpenSSH(t, 60*time.Second, sshd.scp, args...); err != nil {
			t.Fatalf("scp through the forward: %v\nstdout: %s\nstderr: %s", err, out, errOut)
		}
		elapsed := time.Since(start)
		got, err := os.Open(dst)
		if err != nil {
			t.Fatalf("scp succeeded but wrote no %s: %v", dst, err)
		}
		defer got.Close()
		sum.Reset()
		n, err := io.Copy(sum, got)
		if err != nil {
			t.Fatal(err)
		}
		if n != size || string(sum.Sum(nil)) != string(want) {
			t.Fatalf("the copy has %d bytes, SHA-256 %x; the original %d bytes, SHA-256 %x", n, sum.Sum(nil), size, want)
		}
		t.Logf("scp copied %d MiB through the tunnel in %v (%.0f MiB/s)", size>>20, elapsed.Round(time.Millisecond),
			float64(size>>20)/elapsed.Seconds())
		// And it was the tunnel that carried it.
		m := client.WaitLog(t, regexp.MustCompile(`msg="stream closed" .*remote=`+sshTarget+` .*bytes_out=(\d+)`), harness.IOTimeout)
		if out, _ := strconv.ParseInt(m[1], 10, 64); out < size {
			t.Errorf("the forward carried %d bytes to sshd, less than the %d copied", out, size)
		}
	})
}
