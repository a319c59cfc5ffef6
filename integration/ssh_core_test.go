package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sshd is a throwaway OpenSSH server on loopback: its own host key, one
// authorized user key, stopped by PID when the test ends.
type sshd struct {
	port    string
	userKey string // private key file for ssh -i
}

func lookSSH(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"sshd", "ssh", "scp", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				t.Skipf("%s is not installed (Debian packages openssh-server and openssh-client; .ci/deps.sh installs them)", tool)
			}
		}
	}
}

func startSSHD(t *testing.T) sshd {
	t.Helper()
	lookSSH(t)
	dir := t.TempDir()
	keygen := func(path string) {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	hostKey, userKey := filepath.Join(dir, "host_key"), filepath.Join(dir, "user_key")
	keygen(hostKey)
	keygen(userKey)
	pub, err := os.ReadFile(userKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	os.WriteFile(authorized, pub, 0o600)
	os.MkdirAll("/run/sshd", 0o755) // privilege separation directory sshd insists on
	sshdPath, err := exec.LookPath("sshd")
	if err != nil {
		sshdPath = "/usr/sbin/sshd"
	}
	// sshd cannot take a listener: try random high ports until one binds.
	for range 20 {
		port := strconv.Itoa(20000 + mathrand.IntN(30000))
		config := filepath.Join(dir, "sshd_config")
		os.WriteFile(config, []byte(strings.Join([]string{
			"ListenAddress 127.0.0.1:" + port,
			"HostKey " + hostKey,
			"AuthorizedKeysFile " + authorized,
			"PidFile " + filepath.Join(dir, "sshd.pid"),
			"UsePAM no", "StrictModes no", "PermitRootLogin yes",
			"PasswordAuthentication no", "KbdInteractiveAuthentication no",
			"Subsystem sftp internal-sftp", "",
		}, "\n")), 0o600)
		cmd := exec.Command(sshdPath, "-D", "-e", "-f", config)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting sshd: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		for range 50 {
			if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
				c.Close()
				return sshd{port: port, userKey: userKey}
			}
			select {
			case <-exited:
			case <-time.After(100 * time.Millisecond):
				continue
			}
			break
		}
		cmd.Process.Kill()
		<-exited
		if !strings.Contains(stderr.String(), "Address already in use") {
			t.Fatalf("sshd did not start:\n%s", stderr.String())
		}
	}
	t.Fatal("no free port for sshd")
	return sshd{}
}

func (s sshd) sshOptions() []string {
	return []string{"-i", s.userKey, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"}
}

// TestSSHThroughTunnel: a real ssh uses 'burrow client ... stdio:%h:%p' as
// its ProxyCommand and runs a command; and scp copies 50 MiB through a
// local forward, checked by hash.
func TestSSHThroughTunnel(t *testing.T) {
	t.Parallel()
	sd := startSSHD(t)
	srv := startTestServer(t, nil)

	t.Run("ProxyCommand stdio", func(t *testing.T) {
		token := fmt.Sprintf("token-%d", mathrand.Int64())
		proxyCmd := fmt.Sprintf("env BURROW_AUTH=%s:%s %s client --fingerprint %s %s stdio:%%h:%%p",
			testUser, strings.ReplaceAll(testPass, " ", `\ `), burrowBin, srv.cert.fingerprint, srv.url)
		args := append(sd.sshOptions(), "-o", "ProxyCommand="+proxyCmd, "-p", sd.port, "root@127.0.0.1", "echo", token)
		cmd := exec.Command("ssh", args...)
		out, err := runWithTimeout(cmd, 30*time.Second)
		if err != nil || strings.TrimSpace(string(out)) != token {
			t.Fatalf("ssh through stdio: %v, output %q", err, out)
		}
	})

	t.Run("scp 50 MiB through a forward", func(t *testing.T) {
		_, locals := startClient(t, srv.url, testUser+":"+testPass,
			[]string{"--fingerprint", srv.cert.fingerprint}, "127.0.0.1:0:127.0.0.1:"+sd.port)
		_, localPort, _ := net.SplitHostPort(locals[0])
		dir := t.TempDir()
		src, dst := filepath.Join(dir, "big.bin"), filepath.Join(dir, "copy.bin")
		data := make([]byte, 50<<20)
		rand.Read(data)
		os.WriteFile(src, data, 0o600)
		args := append(sd.sshOptions(), "-P", localPort, src, "root@127.0.0.1:"+dst)
		if out, err := runWithTimeout(exec.Command("scp", args...), 60*time.Second); err != nil {
			t.Fatalf("scp: %v\n%s", err, out)
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(data) {
			t.Fatalf("scp copy differs: %d bytes, want %d", len(got), len(data))
		}
	})
}

// runWithTimeout runs cmd and kills it if it outlives timeout. It returns
// what cmd wrote to stdout; stderr comes back inside the error.
func runWithTimeout(cmd *exec.Cmd, timeout time.Duration) ([]byte, error) {
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			err = fmt.Errorf("%w; stderr: %s", err, stderr.Bytes())
		}
		return out.Bytes(), err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return out.Bytes(), fmt.Errorf("%s did not finish within %v", cmd.Path, timeout)
	}
}
