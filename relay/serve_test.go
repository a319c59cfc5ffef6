package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// closedPort returns a loopback address nothing listens on: a listener's
// port, closed again. Only for tests that want "connection refused"; the
// port is never listened on again.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startTCPEcho starts a TCP service on loopback that echoes each
// connection until its client half-closes, then half-closes too. It is
// stopped, and its goroutines waited for, when the test ends.
func startTCPEcho(t *testing.T) string {
	return startTCPService(t, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
}

// startTCPService runs serve on each connection to a new listener on
// 127.0.0.1:0, with testTimeout as its deadline, and closes it after; the
// listener closes and the connections are waited for when the test ends.
func startTCPService(t *testing.T, serve func(*net.TCPConn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(testTimeout))
				serve(c.(*net.TCPConn))
			})
		}
	})
	return l.Addr().String()
}

// blockingDial waits for its context to end, as a dial to a host that
// never answers does.
func blockingDial(ctx context.Context, network, address string) (net.Conn, error) {
	<-ctx.Done()
	return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
}

// failingDial returns a dial function that fails with err.
func failingDial(err error) DialFunc {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		return nil, err
	}
}

// wantRefusal checks that err is a *RemoteError with code and, when msg
// is set, exactly that message.
func wantRefusal(t *testing.T, err error, code mux.Code, msg string) {
	t.Helper()
	var re *mux.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *RemoteError", err, err)
	}
	if re.Code != code {
		t.Errorf("code = %d (%q), want %d", re.Code, re.Message, code)
	}
	if msg != "" && re.Message != msg {
		t.Errorf("message = %q, want %q", re.Message, msg)
	}
}

func TestDialTargetErrors(t *testing.T) {
	t.Parallel()
	var dialer net.Dialer
	refusedAddr := closedPort(t)
	tests := []struct {
		name    string
		dial    DialFunc
		target  string
		timeout time.Duration
		codes   []mux.Code // any of these
		msg     string     // exact message, when set
	}{
		{name: "refused", dial: dialer.DialContext, target: refusedAddr,
			codes: []mux.Code{mux.CodeRefused}, msg: "connection refused by " + refusedAddr},
		// .invalid never resolves (RFC 2606). Without any resolver the
		// lookup fails in another way; either way the target is named.
		{name: "no such host", dial: dialer.DialContext, target: "nonexistent.invalid:80",
			codes: []mux.Code{mux.CodeUnreachable, mux.CodeFailed}},
		{name: "timeout", dial: blockingDial, target: "10.0.0.1:22", timeout: 50 * time.Millisecond,
			codes: []mux.Code{mux.CodeTimeout}, msg: "timed out connecting to 10.0.0.1:22"},
		{name: "net.Error timeout", dial: failingDial(&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}), target: "db:5432",
			codes: []mux.Code{mux.CodeTimeout}, msg: "timed out connecting to db:5432"},
		{name: "dns not found", dial: failingDial(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "db", IsNotFound: true}}), target: "db:5432",
			codes: []mux.Code{mux.CodeUnreachable}, msg: "cannot resolve db:5432: no such host"},
		{name: "dns timeout", dial: failingDial(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "i/o timeout", Name: "db", IsTimeout: true}}), target: "db:5432",
			codes: []mux.Code{mux.CodeTimeout}, msg: "timed out connecting to db:5432"},
		{name: "host unreachable", dial: failingDial(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}), target: "10.9.9.9:22",
			codes: []mux.Code{mux.CodeUnreachable}, msg: "10.9.9.9:22 is unreachable"},
		{name: "network unreachable", dial: failingDial(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}), target: "[2001:db8::1]:22",
			codes: []mux.Code{mux.CodeUnreachable}, msg: "[2001:db8::1]:22 is unreachable"},
		{name: "refused errno", dial: failingDial(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), target: "db:5432",
			codes: []mux.Code{mux.CodeRefused}, msg: "connection refused by db:5432"},
		// The dialer's own refusal (an access list, say) passes as it is.
		{name: "coded", dial: failingDial(mux.Refuse(mux.CodeDenied, "target db:5432 is not allowed")), target: "db:5432",
			codes: []mux.Code{mux.CodeDenied}, msg: "target db:5432 is not allowed"},
		{name: "wrapped coded", dial: failingDial(&net.OpError{Op: "dial", Net: "tcp", Err: mux.Refuse(mux.CodeDenied, "target db:5432 is not allowed")}), target: "db:5432",
			codes: []mux.Code{mux.CodeDenied}, msg: "target db:5432 is not allowed"},
		{name: "other", dial: failingDial(errors.New("boom")), target: "db:5432",
			codes: []mux.Code{mux.CodeFailed}, msg: "cannot connect to db:5432: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			timeout := tt.timeout
			if timeout == 0 {
				timeout = testTimeout
			}
			start := time.Now()
			conn, err := DialTarget(context.Background(), tt.dial, "tcp", tt.target, timeout)
			if conn != nil {
				conn.Close()
				t.Fatalf("DialTarget %s connected", tt.target)
			}
			var re *mux.RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("DialTarget error %v (%T) is not a *RemoteError", err, err)
			}
			found := false
			for _, c := range tt.codes {
				found = found || re.Code == c
			}
			if !found {
				t.Errorf("code = %d (%q), want one of %v", re.Code, re.Message, tt.codes)
			}
			if tt.msg != "" && re.Message != tt.msg {
				t.Errorf("message = %q, want %q", re.Message, tt.msg)
			}
			if !strings.Contains(re.Message, tt.target) {
				t.Errorf("message %q does not name the target %s", re.Message, tt.target)
			}
			if tt.timeout != 0 {
				if d := time.Since(start); d < tt.timeout || d > tt.timeout+5*time.Second {
					t.Errorf("DialTarget returned after %v, want about %v", d, tt.timeout)
				}
			}
			// A refusal reaches the opener with the same code and text.
			var b bytes.Buffer
			if err := mux.WriteReply(&b, err); err != nil {
				t.Fatal(err)
			}
			wantRefusal(t, mux.ReadReply(&b), re.Code, re.Message)
		})
	}
}

// TestDialTargetPassesOn checks that DialTarget hands the network and
// target to the dial function as they are, bounds it by the timeout and
// by the caller's context, and returns its connection.
func TestDialTargetPassesOn(t *testing.T) {
	t.Parallel()
	target := startTCPEcho(t)
	var (
		gotNetwork, gotAddr string
		deadline            time.Time
		hasDeadline         bool
	)
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		gotNetwork, gotAddr = network, address
		deadline, hasDeadline = ctx.Deadline()
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
	start := time.Now()
	conn, err := DialTarget(context.Background(), dial, "tcp", target, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if gotNetwork != "tcp" || gotAddr != target {
		t.Errorf("dial got %s %s, want tcp %s", gotNetwork, gotAddr, target)
	}
	if !hasDeadline || deadline.Before(start.Add(time.Minute)) || deadline.After(time.Now().Add(time.Minute)) {
		t.Errorf("dial context deadline = %v (set %v), want a minute from the call", deadline, hasDeadline)
	}

	// The caller's context ends the dial too.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err = DialTarget(ctx, blockingDial, "tcp", "10.0.0.1:22", testTimeout)
	var re *mux.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "10.0.0.1:22") {
		t.Errorf("DialTarget after cancel = %v, want a refusal naming the target", err)
	}
}

type serveTCPResult struct {
	sent, received int64
	err            error
}

// runServeTCP runs ServeTCP on the stream end of a net.Pipe and returns
// the opener's end, the number of times opened was called, and the
// result when ServeTCP returns.
func runServeTCP(t *testing.T, dial DialFunc, target string, timeout time.Duration) (net.Conn, *atomic.Int32, <-chan serveTCPResult) {
	t.Helper()
	opener, st := net.Pipe()
	opener.SetDeadline(time.Now().Add(testTimeout))
	opened := new(atomic.Int32)
	res := make(chan serveTCPResult, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sent, received, err := ServeTCP(context.Background(), st, dial, target, timeout, func() { opened.Add(1) })
		res <- serveTCPResult{sent, received, err}
	}()
	t.Cleanup(func() {
		opener.Close()
		st.Close()
		select {
		case <-done:
		case <-time.After(testTimeout):
			t.Error("ServeTCP did not return after both ends closed")
		}
	})
	return opener, opened, res
}

func TestServeTCPEcho(t *testing.T) {
	t.Parallel()
	target := startTCPEcho(t)
	var dialer net.Dialer
	for _, size := range []int{1, 1400, 64<<10 + 1, 1 << 20} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			t.Parallel()
			opener, opened, res := runServeTCP(t, dialer.DialContext, target, testTimeout)
			if err := mux.ReadReply(opener); err != nil {
				t.Fatalf("ReadReply: %v", err)
			}
			payload := bytes.Repeat([]byte("burrow!"), size/7+1)[:size]
			writeErr := make(chan error, 1)
			go func() {
				_, err := opener.Write(payload)
				writeErr <- err
			}()
			got := make([]byte, size)
			if _, err := io.ReadFull(opener, got); err != nil {
				t.Fatalf("reading the echo: %v", err)
			}
			if err := <-writeErr; err != nil {
				t.Fatalf("writing: %v", err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("the echo differs from what was sent")
			}
			opener.Close() // EOF towards the target; the echo then ends
			select {
			case r := <-res:
				if r.err != nil || r.sent != int64(size) || r.received != int64(size) {
					t.Errorf("ServeTCP = %d, %d, %v; want %d, %d, nil", r.sent, r.received, r.err, size, size)
				}
			case <-time.After(testTimeout):
				t.Fatal("ServeTCP did not return after the opener closed")
			}
			if n := opened.Load(); n != 1 {
				t.Errorf("opened called %d times, want 1", n)
			}
		})
	}
}

// TestServeTCPOpenedAfterReply checks that opened runs only once the
// opener has been told the stream is accepted.
func TestServeTCPOpenedAfterReply(t *testing.T) {
	t.Parallel()
	target := startTCPEcho(t)
	var dialer net.Dialer
	opener, opened, _ := runServeTCP(t, dialer.DialContext, target, testTimeout)
	// net.Pipe is unbuffered: the reply is still in ServeTCP's Write
	// until it is read here.
	time.Sleep(50 * time.Millisecond)
	if n := opened.Load(); n != 0 {
		t.Fatalf("opened called %d times before the reply was read", n)
	}
	if err := mux.ReadReply(opener); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testTimeout)
	for opened.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := opened.Load(); n != 1 {
		t.Fatalf("opened called %d times after the reply, want 1", n)
	}
}

func TestServeTCPRefused(t *testing.T) {
	t.Parallel()
	var dialer net.Dialer
	refusedAddr := closedPort(t)
	tests := []struct {
		name    string
		dial    DialFunc
		target  string
		timeout time.Duration
		code    mux.Code
		msg     string
	}{
		{"refused", dialer.DialContext, refusedAddr, testTimeout, mux.CodeRefused, "connection refused by " + refusedAddr},
		{"denied", failingDial(mux.Refuse(mux.CodeDenied, "target 10.0.0.1:22 is not allowed")), "10.0.0.1:22", testTimeout, mux.CodeDenied, "target 10.0.0.1:22 is not allowed"},
		{"timeout", blockingDial, "10.0.0.1:22", 50 * time.Millisecond, mux.CodeTimeout, "timed out connecting to 10.0.0.1:22"},
		{"unreachable", failingDial(os.NewSyscallError("connect", syscall.EHOSTUNREACH)), "10.0.0.1:22", testTimeout, mux.CodeUnreachable, "10.0.0.1:22 is unreachable"},
		{"other", failingDial(errors.New("boom")), "10.0.0.1:22", testTimeout, mux.CodeFailed, "cannot connect to 10.0.0.1:22: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opener, opened, res := runServeTCP(t, tt.dial, tt.target, tt.timeout)
			wantRefusal(t, mux.ReadReply(opener), tt.code, tt.msg)
			// After the refusal the stream is closed.
			if n, err := opener.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("read after the refusal = %d, %v; want EOF", n, err)
			}
			select {
			case r := <-res:
				if r.sent != 0 || r.received != 0 {
					t.Errorf("ServeTCP counted %d and %d bytes for a refused stream", r.sent, r.received)
				}
				wantRefusal(t, r.err, tt.code, tt.msg)
			case <-time.After(testTimeout):
				t.Fatal("ServeTCP did not return after refusing")
			}
			if n := opened.Load(); n != 0 {
				t.Errorf("opened called %d times for a refused stream", n)
			}
		})
	}
}

// TestServeTCPOpenerGone checks that ServeTCP does not leave the target
// connection open when the reply cannot be delivered.
func TestServeTCPOpenerGone(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	opener, st := net.Pipe()
	opener.Close()
	var dialer net.Dialer
	opened := false
	_, _, err = ServeTCP(context.Background(), st, dialer.DialContext, l.Addr().String(), testTimeout, func() { opened = true })
	if err == nil || opened {
		t.Fatalf("ServeTCP to a gone opener = %v (opened %v), want an error", err, opened)
	}
	c, ok := <-accepted
	if !ok {
		t.Fatal("the target never saw the connection")
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("target read = %d, %v; want EOF: the connection was left open", n, err)
	}
}

// TestServeTCPEndsWithContext checks that a stream whose target stopped
// reading does not outlive its context (the session): the copy blocked
// writing to the target must be interrupted, or the session that owns the
// stream could never finish.
func TestServeTCPEndsWithContext(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	opener, st := net.Pipe()
	defer opener.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dialer net.Dialer
	done := make(chan error, 1)
	go func() {
		_, _, err := ServeTCP(ctx, st, dialer.DialContext, l.Addr().String(), testTimeout, nil)
		done <- err
	}()
	if err := mux.ReadReply(opener); err != nil {
		t.Fatal(err)
	}
	c, ok := <-accepted
	if !ok {
		t.Fatal("the target never saw the connection")
	}
	defer c.Close() // and never read

	// Write until the target's socket buffers are full and a write has
	// waited 200 ms.
	var written int64
	buf := make([]byte, 64<<10)
	for {
		opener.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := opener.Write(buf)
		written += int64(n)
		if isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatalf("write after %d bytes: %v", written, err)
		}
		if written > 1<<30 {
			t.Fatal("a target that never reads took 1 GiB")
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeTCP = %v after carrying %d bytes, want nil", err, written)
		}
	case <-time.After(testTimeout):
		t.Fatalf("ServeTCP still blocked %v after its context ended (%d bytes written to a target that does not read)", testTimeout, written)
	}
}

// ServeTCP answers a stream that asked for a TCP connection to target:
// it dials, replies, calls opened (when not nil), and splices until both
// sides are done or ctx ends. It returns the bytes carried each way (stream to
// target, target to stream), or the error it replied with. It is
// SpliceTCP on a nil Parking, waited for, as the tests use it.
func ServeTCP(ctx context.Context, st net.Conn, dial DialFunc, target string, timeout time.Duration, opened func()) (sent, received int64, err error) {
	done := make(chan [2]int64, 1)
	var p *Parking
	err = p.SpliceTCP(ctx, st, dial, target, timeout, opened, func(sent, received int64) { done <- [2]int64{sent, received} })
	if err != nil {
		return 0, 0, err
	}
	n := <-done
	return n[0], n[1], nil
}
