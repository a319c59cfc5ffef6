package yamux_test

// Burrow's test, not upstream's (see PATCHES.md): the patched copy and the
// released v0.1.2 hold a session with each other, each in either role.
// The release runs in a process of its own, built from
// testdata/released, a module without Burrow's replace; TestWireGolden
// holds the exact bytes of a scripted session, this test the two
// implementations under real load: concurrent streams beyond their
// windows in both directions, and pings both ways all along.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// buildReleased builds testdata/released, skipping the test when the
// released module cannot be had (no module cache and no network).
func buildReleased(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "released")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join("testdata", "released")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		if strings.Contains(string(out), "github.com/hashicorp/yamux@v0.1.2") {
			t.Skipf("the released yamux v0.1.2 is not available to build against: %v\n%s", err, out)
		}
		t.Fatalf("building testdata/released: %v\n%s", err, out)
	}
	return bin
}

// procConn is a child's standard output and input as one connection.
type procConn struct {
	io.Reader
	io.WriteCloser
}

func TestInteropReleased(t *testing.T) {
	bin := buildReleased(t)
	for _, role := range []string{"client", "server"} {
		t.Run("released "+role, func(t *testing.T) { interopReleased(t, bin, role) })
	}
}

func interopReleased(t *testing.T, bin, releasedRole string) {
	cmd := exec.Command(bin, releasedRole)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	verified := make(chan struct{})
	var logMu sync.Mutex
	var logs []string
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			logs = append(logs, sc.Text())
			logMu.Unlock()
			if sc.Text() == "verified" {
				close(verified)
			}
		}
		exited <- cmd.Wait()
	}()
	defer func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			logMu.Lock()
			t.Logf("released %s's stderr:\n%s", releasedRole, strings.Join(logs, "\n"))
			logMu.Unlock()
		}
	}()

	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.KeepAliveInterval = 10 * time.Millisecond
	start := yamux.Client
	if releasedRole == "client" {
		start = yamux.Server
	}
	sess, err := start(procConn{stdout, stdin}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()

	// The release's streams: echoed here.
	go func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				io.Copy(st, st)
				st.Close()
			}()
		}
	}()

	// Ours: echoed there.
	const streams, size = 16, 1 << 20
	errs := make(chan error, streams+1)
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := echoThrough(sess, int64(i), size); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}(i)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			if _, err := sess.Ping(); err != nil {
				errs <- fmt.Errorf("ping %d: %w", i, err)
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	select {
	case <-verified:
	case err := <-exited:
		exited <- err
		t.Fatalf("released %s exited (%v) before its streams were verified", releasedRole, err)
	case <-time.After(time.Minute):
		t.Fatalf("released %s did not verify its streams within a minute", releasedRole)
	}
	if sess.IsClosed() {
		t.Fatal("the session ended before this side closed it")
	}
	sess.Close()
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("released %s: %v", releasedRole, err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("released %s still running 10 s after the session closed", releasedRole)
	}
}

// echoThrough opens a stream, writes size random bytes on it in pieces of
// random sizes while reading them back, and checks the echo.
func echoThrough(sess *yamux.Session, seed int64, size int) error {
	st, err := sess.OpenStream()
	if err != nil {
		return err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(time.Minute))
	rng := rand.New(rand.NewSource(seed))
	out := make([]byte, size)
	rng.Read(out)
	werr := make(chan error, 1)
	go func() {
		for off := 0; off < len(out); {
			n := 1 + rng.Intn(128<<10)
			if off+n > len(out) {
				n = len(out) - off
			}
			if _, err := st.Write(out[off : off+n]); err != nil {
				werr <- err
				return
			}
			off += n
		}
		werr <- nil
	}()
	in := make([]byte, len(out))
	if _, err := io.ReadFull(st, in); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if !bytes.Equal(in, out) {
		return fmt.Errorf("the echo differs")
	}
	return nil
}
