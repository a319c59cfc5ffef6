package harness

import (
	"bytes"
	"errors"
	"io"
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

// Timeouts. Generous enough for a loaded 2-core machine running the tests in
// parallel, small enough that a hang fails the test rather than the run.
const (
	StartTimeout = 15 * time.Second // a process logs that it is ready
	ExitTimeout  = 10 * time.Second // a process told to stop, or bound to fail, exits
	IOTimeout    = 20 * time.Second // one small exchange through a tunnel
)

// SyncBuffer is a bytes.Buffer safe for one writer and many readers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Len is the number of bytes written so far, without copying them.
func (b *SyncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// Proc is a process started by a test: burrow (Burrow.Start) or another
// program (StartCmd).
type Proc struct {
	Name   string
	Cmd    *exec.Cmd
	Stdout SyncBuffer
	Stderr SyncBuffer // slog writes here, and the final "burrow: ..." line

	done     chan struct{} // closed when the process has been waited for
	ExitCode int           // valid once Exited; -1 when killed by a signal
	WaitErr  error         // valid once Exited
}

// StartCmd runs cmd, a program other than burrow, the way Burrow.Start runs
// burrow: its output is kept in memory (Stderr for WaitLog) and in
// name.log in the test's temp dir. cmd.Env, when nil, is CleanEnv. When the
// test ends it is sent stop (if not 0) by PID and given a few seconds to
// exit cleanly, then SIGKILLed and waited for; the last 8 KiB of each of its
// outputs is logged if the test failed.
func StartCmd(tb testing.TB, name string, cmd *exec.Cmd, stop syscall.Signal) *Proc {
	tb.Helper()
	if cmd.Env == nil {
		cmd.Env = CleanEnv()
	}
	return start(tb, name, cmd, stop, strings.Join(cmd.Args, " "), 8<<10)
}

// start runs cmd with its output in the Proc's buffers and name.log, and
// stops it when the test ends (see StartCmd). shown is the command line the
// failure log names; limit, when not 0, how much of each output it keeps.
func start(tb testing.TB, name string, cmd *exec.Cmd, stop syscall.Signal, shown string, limit int) *Proc {
	tb.Helper()
	logFile, err := os.Create(filepath.Join(tb.TempDir(), name+".log"))
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proc{Name: name, Cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = io.MultiWriter(&p.Stdout, logFile)
	cmd.Stderr = io.MultiWriter(&p.Stderr, logFile)
	cmd.WaitDelay = 2 * time.Second // bound Wait even if a pipe stays open
	if err := cmd.Start(); err != nil {
		logFile.Close()
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.WaitErr = cmd.Wait()
		p.ExitCode = cmd.ProcessState.ExitCode()
		logFile.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		if stop != 0 && !p.Exited() {
			syscall.Kill(cmd.Process.Pid, stop)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				tb.Logf("%s (pid %d) still running 5s after %v; killing it", name, cmd.Process.Pid, stop)
			}
		}
		p.Kill(tb)
		if tb.Failed() {
			tb.Logf("%s (pid %d, %s) stdout:\n%s", name, cmd.Process.Pid, shown, tailOf(p.Stdout.String(), limit))
			tb.Logf("%s (pid %d) stderr:\n%s", name, cmd.Process.Pid, tailOf(p.Stderr.String(), limit))
		}
	})
	return p
}

// tailOf is the last n bytes of s (all of it when n is 0).
func tailOf(s string, n int) string {
	if n > 0 && len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}

// CleanEnv is the test's environment without BURROW_* variables, which
// would otherwise set flags behind the tests' back.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BURROW_") {
			env = append(env, kv)
		}
	}
	return env
}

// Done is closed once the process has ended and been waited for.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL to the process (by PID) unless it has already exited,
// and waits for it.
func (p *Proc) Kill(tb testing.TB) {
	tb.Helper()
	if !p.Exited() {
		if err := syscall.Kill(p.Cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			tb.Errorf("kill %s (pid %d): %v", p.Name, p.Cmd.Process.Pid, err)
		}
	}
	select {
	case <-p.done:
	case <-time.After(ExitTimeout):
		tb.Errorf("%s (pid %d) still running %v after SIGKILL", p.Name, p.Cmd.Process.Pid, ExitTimeout)
	}
}

// Signal sends sig to the process by PID.
func (p *Proc) Signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	if err := syscall.Kill(p.Cmd.Process.Pid, sig); err != nil {
		tb.Fatalf("signal %v to %s (pid %d): %v", sig, p.Name, p.Cmd.Process.Pid, err)
	}
}

// WaitExit waits up to timeout for the process to exit and returns its exit
// code; it fails the test if the process is still running.
func (p *Proc) WaitExit(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case <-p.done:
		return p.ExitCode
	case <-time.After(timeout):
		tb.Fatalf("%s (pid %d) did not exit within %v", p.Name, p.Cmd.Process.Pid, timeout)
		return 0
	}
}

// WaitLog polls the process's log (stderr) until re matches, and returns the
// first match's submatches. It fails the test after timeout, or as soon as
// the process exits without the line having appeared.
func (p *Proc) WaitLog(tb testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	tb.Helper()
	return p.WaitLogCount(tb, re, 1, timeout)[0]
}

// WaitLogCount is WaitLog for the first n matches.
func (p *Proc) WaitLogCount(tb testing.TB, re *regexp.Regexp, n int, timeout time.Duration) [][]string {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		exited := p.Exited() // read before the log, so a last line is not missed
		if m := re.FindAllStringSubmatch(p.Stderr.String(), -1); len(m) >= n {
			return m[:n]
		}
		if exited {
			tb.Fatalf("%s exited (code %d, %v) before logging %d lines matching %q", p.Name, p.ExitCode, p.WaitErr, n, re)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not log %d lines matching %q within %v", p.Name, n, re, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CountLog returns how many times re matches the process's log so far.
func (p *Proc) CountLog(re *regexp.Regexp) int {
	return len(re.FindAllStringIndex(p.Stderr.String(), -1))
}

// StderrLines splits a process's stderr into slog lines and other lines.
func StderrLines(p *Proc) (logLines, other []string) {
	for line := range strings.Lines(p.Stderr.String()) {
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
