package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/mux"
	"github.com/hashicorp/yamux"
)

// yamuxPair returns a session's two ends over TCP loopback, closed when
// the test ends.
func yamuxPair(t *testing.T) (client, server *mux.Session) {
	t.Helper()
	a, b := tcpPair(t)
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	yc, err := yamux.Client(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ys, err := yamux.Server(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { yc.Close(); ys.Close() })
	return mux.FromYamux(yc), mux.FromYamux(ys)
}

// streamPair opens a stream on a new session and returns both its ends.
func streamPair(t *testing.T) (local, remote *mux.Stream) {
	t.Helper()
	client, server := yamuxPair(t)
	return acceptedStream(t, client, server)
}

// acceptedStream opens a stream on client and returns it with its end
// accepted on server, once the byte that makes it known there has been
// read.
func acceptedStream(tb testing.TB, client, server *mux.Session) (local, remote *mux.Stream) {
	tb.Helper()
	local, err := client.OpenStream()
	if err != nil {
		tb.Fatal(err)
	}
	// The peer learns of a stream from its first frame.
	if _, err := local.Write([]byte{0}); err != nil {
		tb.Fatal(err)
	}
	remote, err = server.AcceptStream()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(remote, make([]byte, 1)); err != nil {
		tb.Fatal(err)
	}
	return local, remote
}

// tcpPair returns both ends of a TCP connection over loopback, closed when
// the test ends.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	c, s := connPair(t, "tcp", "127.0.0.1:0")
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// unixPair is tcpPair for a Unix stream socket.
func unixPair(t *testing.T) (a, b *net.UnixConn) {
	c, s := connPair(t, "unix", filepath.Join(t.TempDir(), "s"))
	return c.(*net.UnixConn), s.(*net.UnixConn)
}

func connPair(t *testing.T, network, addr string) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial(network, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// waitSource is a source waitData can wait on, and what its peer can do.
type waitSource struct {
	name       string
	linuxOnly  bool // waited for without a buffer only on Linux
	open       func(t *testing.T) (src io.ReadWriteCloser, peer io.ReadWriteCloser)
	closeWrite func(peer io.ReadWriteCloser)
}

var waitSources = []waitSource{
	{
		name:      "tcp",
		linuxOnly: true,
		open: func(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
			a, b := tcpPair(t)
			return a, b
		},
		closeWrite: func(peer io.ReadWriteCloser) { peer.(*net.TCPConn).CloseWrite() },
	},
	{
		name:      "unix",
		linuxOnly: true,
		open: func(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
			a, b := unixPair(t)
			return a, b
		},
		closeWrite: func(peer io.ReadWriteCloser) { peer.(*net.UnixConn).CloseWrite() },
	},
	{
		name: "yamux",
		open: func(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
			a, b := streamPair(t)
			return a, b
		},
		closeWrite: func(peer io.ReadWriteCloser) { peer.Close() }, // a yamux Close is a half-close
	},
}

type waitResult struct {
	waited bool
	err    error
}

// startWait runs waitData on src in a goroutine.
func startWait(src io.Reader) <-chan waitResult {
	res := make(chan waitResult, 1)
	go func() {
		waited, err := waitData(src)
		res <- waitResult{waited, err}
	}()
	return res
}

// TestWaitData checks that waitData waits for data without taking it, and
// tells data, EOF, a deadline and a local close apart.
func TestWaitData(t *testing.T) {
	t.Parallel()
	for _, ws := range waitSources {
		t.Run(ws.name, func(t *testing.T) {
			t.Parallel()
			if ws.linuxOnly && runtime.GOOS != "linux" {
				t.Skip("waited for with a small buffer on " + runtime.GOOS)
			}
			t.Run("data", func(t *testing.T) {
				src, peer := ws.open(t)
				res := startWait(src)
				select {
				case r := <-res:
					t.Fatalf("waitData returned %v, %v with nothing sent", r.waited, r.err)
				case <-time.After(50 * time.Millisecond):
				}
				peer.Write([]byte("hi"))
				if r := <-res; !r.waited || r.err != nil {
					t.Fatalf("waitData = %v, %v; want true, nil", r.waited, r.err)
				}
				// The data is still there, and waiting again returns at once.
				if r := <-startWait(src); !r.waited || r.err != nil {
					t.Fatalf("waitData again = %v, %v; want true, nil", r.waited, r.err)
				}
				got := make([]byte, 2)
				if _, err := io.ReadFull(src, got); err != nil || string(got) != "hi" {
					t.Fatalf("read after the wait = %q, %v; want %q", got, err, "hi")
				}
			})
			t.Run("eof", func(t *testing.T) {
				src, peer := ws.open(t)
				res := startWait(src)
				ws.closeWrite(peer)
				if r := <-res; !r.waited || r.err != io.EOF {
					t.Fatalf("waitData = %v, %v; want true, EOF", r.waited, r.err)
				}
			})
			t.Run("data then eof", func(t *testing.T) {
				src, peer := ws.open(t)
				peer.Write([]byte("hi"))
				ws.closeWrite(peer)
				time.Sleep(20 * time.Millisecond)
				if r := <-startWait(src); !r.waited || r.err != nil {
					t.Fatalf("waitData = %v, %v; want true, nil: data comes before the EOF", r.waited, r.err)
				}
				if got, err := io.ReadAll(src); err != nil || string(got) != "hi" {
					t.Fatalf("read = %q, %v; want %q", got, err, "hi")
				}
				if r := <-startWait(src); !r.waited || r.err != io.EOF {
					t.Fatalf("waitData after the data = %v, %v; want true, EOF", r.waited, r.err)
				}
			})
			t.Run("deadline", func(t *testing.T) {
				src, _ := ws.open(t)
				src.(deadliner).SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				if r := <-startWait(src); !r.waited || !isTimeout(r.err) {
					t.Fatalf("waitData past the deadline = %v, %v; want true, a timeout", r.waited, r.err)
				}
			})
		})
	}
}

// TestWaitConnClosedOrReset checks that a socket closed under a waiting
// direction, or reset by the peer, is an error and not an EOF: the peek
// takes the reset, so a read after it would see only EOF.
func TestWaitConnClosedOrReset(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("waited for with a small buffer on " + runtime.GOOS)
	}
	t.Run("closed", func(t *testing.T) {
		src, _ := tcpPair(t)
		res := startWait(src)
		time.Sleep(20 * time.Millisecond)
		src.Close()
		if r := <-res; !r.waited || !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("waitData on a closed socket = %v, %v; want true, net.ErrClosed", r.waited, r.err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		src, peer := tcpPair(t)
		res := startWait(src)
		time.Sleep(20 * time.Millisecond)
		peer.SetLinger(0)
		peer.Close()
		if r := <-res; !r.waited || !errors.Is(r.err, syscall.ECONNRESET) {
			t.Fatalf("waitData on a reset socket = %v, %v; want true, ECONNRESET", r.waited, r.err)
		}
	})
}

// TestWaitDataOther checks that a source that cannot be waited on without
// a buffer says so at once.
func TestWaitDataOther(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if waited, err := waitData(a); waited || err != nil {
		t.Fatalf("waitData(net.Pipe) = %v, %v; want false, nil", waited, err)
	}
}

// spliceEnds are the two things a splice joins, each with the peer a test
// talks to.
type spliceEnds struct {
	name string
	open func(t *testing.T) (a, aPeer, b, bPeer io.ReadWriteCloser)
}

// noDeadline hides a TCP connection's deadlines: a source whose bursts
// nothing can end.
type noDeadline struct{ c *net.TCPConn }

func (n noDeadline) Read(p []byte) (int, error)  { return n.c.Read(p) }
func (n noDeadline) Write(p []byte) (int, error) { return n.c.Write(p) }
func (n noDeadline) Close() error                { return n.c.Close() }
func (n noDeadline) CloseWrite() error           { return n.c.CloseWrite() }

var spliceEndsList = []spliceEnds{
	{
		name: "yamux-tcp",
		open: func(t *testing.T) (a, aPeer, b, bPeer io.ReadWriteCloser) {
			local, remote := streamPair(t)
			c, s := tcpPair(t)
			return remote, local, c, s
		},
	},
	{
		name: "tcp-tcp",
		open: func(t *testing.T) (a, aPeer, b, bPeer io.ReadWriteCloser) {
			a1, a2 := tcpPair(t)
			b1, b2 := tcpPair(t)
			return a1, a2, b1, b2
		},
	},
	{
		name: "pipe-pipe", // waited for with a small buffer
		open: func(t *testing.T) (a, aPeer, b, bPeer io.ReadWriteCloser) {
			a1, a2 := net.Pipe()
			b1, b2 := net.Pipe()
			t.Cleanup(func() { a1.Close(); a2.Close(); b1.Close(); b2.Close() })
			return a1, a2, b1, b2
		},
	},
	{
		name: "no deadlines",
		open: func(t *testing.T) (a, aPeer, b, bPeer io.ReadWriteCloser) {
			a1, a2 := tcpPair(t)
			b1, b2 := tcpPair(t)
			return noDeadline{a1}, a2, noDeadline{b1}, b2
		},
	},
}

type spliced struct{ aToB, bToA int64 }

// startSplice splices a and b and returns what done reports; the test
// fails if done is called more than once.
func startSplice(t *testing.T, a, b io.ReadWriteCloser) <-chan spliced {
	res := make(chan spliced, 2)
	var calls atomic.Int32
	Splice(a, b, func(aToB, bToA int64) {
		if calls.Add(1) > 1 {
			t.Error("done called twice")
		}
		res <- spliced{aToB, bToA}
	})
	return res
}

// TestSpliceBursts sends a few small exchanges apart by more than
// burstIdle, so each wait starts anew, then a large transfer each way at
// once, and checks the bytes and counts.
func TestSpliceBursts(t *testing.T) {
	t.Parallel()
	for _, e := range spliceEndsList {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			a, aPeer, b, bPeer := e.open(t)
			res := startSplice(t, a, b)
			for _, peer := range []io.ReadWriteCloser{aPeer, bPeer} {
				if d, ok := peer.(interface{ SetDeadline(time.Time) error }); ok {
					d.SetDeadline(time.Now().Add(testTimeout))
				}
			}
			var want spliced
			for i := range 3 {
				if i > 0 {
					time.Sleep(burstIdle + 50*time.Millisecond)
				}
				msg := []byte("ping")
				go aPeer.Write(msg)
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(bPeer, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("exchange %d: b's peer read %q, %v", i, got, err)
				}
				go bPeer.Write([]byte("pong!"))
				got = make([]byte, 5)
				if _, err := io.ReadFull(aPeer, got); err != nil || string(got) != "pong!" {
					t.Fatalf("exchange %d: a's peer read %q, %v", i, got, err)
				}
				want.aToB += 4
				want.bToA += 5
			}

			// 1 MiB each way at once, then each side's FIN (or close, where
			// there is no half-close).
			const size = 1 << 20
			send := func(w io.Writer, seed byte) <-chan [32]byte {
				sum := make(chan [32]byte, 1)
				go func() {
					buf := make([]byte, size)
					for i := range buf {
						buf[i] = byte(i*7) + seed
					}
					w.Write(buf)
					sum <- sha256.Sum256(buf)
				}()
				return sum
			}
			recv := func(r io.Reader) <-chan [32]byte {
				sum := make(chan [32]byte, 1)
				go func() {
					buf := make([]byte, size)
					io.ReadFull(r, buf)
					sum <- sha256.Sum256(buf)
				}()
				return sum
			}
			sentAB, sentBA := send(aPeer, 1), send(bPeer, 2)
			gotAB, gotBA := recv(bPeer), recv(aPeer)
			if <-sentAB != <-gotAB {
				t.Error("a to b: the bytes differ")
			}
			if <-sentBA != <-gotBA {
				t.Error("b to a: the bytes differ")
			}
			shutdown(aPeer)
			shutdown(bPeer)
			want.aToB += size
			want.bToA += size
			select {
			case got := <-res:
				if got != want {
					t.Errorf("done reported %+v, want %+v", got, want)
				}
			case <-time.After(testTimeout):
				t.Fatal("done not called after both sides ended")
			}
		})
	}
}

// shutdown half-closes w where it can, and closes it otherwise.
func shutdown(w io.Closer) {
	if hc, ok := w.(halfCloser); ok {
		hc.CloseWrite()
		return
	}
	w.Close()
}

// TestSpliceReset checks that a reset on one side ends the splice: both
// ends are closed, the other side's peer sees a reset, not a clean end,
// and done is called.
func TestSpliceReset(t *testing.T) {
	t.Parallel()
	local, remote := streamPair(t)
	c, target := tcpPair(t)
	res := startSplice(t, remote, c)
	local.SetDeadline(time.Now().Add(testTimeout))
	local.Write([]byte("hi"))
	got := make([]byte, 2)
	target.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(target, got); err != nil {
		t.Fatal(err)
	}
	target.SetLinger(0)
	target.Close()
	if n, err := io.Copy(io.Discard, local); !errors.Is(err, yamux.ErrConnectionReset) || n != 0 {
		t.Errorf("the stream's peer read %d bytes, %v; want a reset (%v)", n, err, yamux.ErrConnectionReset)
	}
	select {
	case got := <-res:
		if got.aToB != 2 || got.bToA != 0 {
			t.Errorf("done reported %+v, want 2 and 0 bytes", got)
		}
	case <-time.After(testTimeout):
		t.Fatal("done not called after a reset")
	}
}

// writeSizes is a connection that records the size of every write to it.
type writeSizes struct {
	*net.TCPConn
	mu    sync.Mutex
	sizes []int
}

func (w *writeSizes) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.sizes = append(w.sizes, len(p))
	w.mu.Unlock()
	return w.TCPConn.Write(p)
}

func (w *writeSizes) largest() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Max(append(w.sizes, 0))
}

// TestParkingCopyBuffer checks that a Parking's splices read a busy
// direction in pieces of its copy buffer: no larger, and larger than the
// small buffer a burst starts with.
func TestParkingCopyBuffer(t *testing.T) {
	t.Parallel()
	for _, size := range []int{mux.MinCopyBuffer, 3 * mux.MinCopyBuffer} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			p := NewParking(size)
			defer p.Close()
			a, aPeer := tcpPair(t)
			b, bPeer := tcpPair(t)
			dst := &writeSizes{TCPConn: b}
			done := make(chan struct{})
			p.Splice(context.Background(), a, dst, func(int64, int64) { close(done) })
			const total = 4 << 20
			go func() {
				aPeer.Write(make([]byte, total))
				aPeer.CloseWrite()
			}()
			bPeer.SetDeadline(time.Now().Add(testTimeout))
			if n, err := io.Copy(io.Discard, bPeer); n != total || err != nil {
				t.Fatalf("copied %d bytes, %v; want %d", n, err, total)
			}
			bPeer.Close()
			<-done
			if got := dst.largest(); got != size {
				t.Errorf("largest write %d bytes, want the copy buffer's %d", got, size)
			}
		})
	}
	if got := mux.MaxBatch(0); got != mux.DefaultMaxBatch {
		t.Errorf("MaxBatch(0) = %d, want DefaultMaxBatch", got)
	}
}

// TestSpliceSessionEnd checks that a splice ends whole when the session
// of its stream ends: the connection is reset, not half-closed, so an
// application that only waits is not left holding it, nor one that reads
// to the end led to take what came for all there was; and done is called
// without it writing.
func TestSpliceSessionEnd(t *testing.T) {
	t.Parallel()
	for _, side := range []string{"opener", "acceptor"} {
		t.Run(side, func(t *testing.T) {
			t.Parallel()
			local, remote := streamPair(t)
			st, peer := local, remote
			if side == "acceptor" {
				st, peer = remote, local
			}
			c, app := tcpPair(t)
			res := startSplice(t, st, c)
			app.SetDeadline(time.Now().Add(testTimeout))
			peer.SetDeadline(time.Now().Add(testTimeout))
			if _, err := peer.Write([]byte("hi")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(app, make([]byte, 2)); err != nil {
				t.Fatal(err)
			}
			peer.Session().Close() // the connection under the session ends
			if n, err := io.Copy(io.Discard, app); !errors.Is(err, syscall.ECONNRESET) || n != 0 {
				t.Errorf("the application read %d bytes, %v; want a reset (ECONNRESET)", n, err)
			}
			select {
			case got := <-res:
				if got.aToB != 2 || got.bToA != 0 {
					t.Errorf("done reported %+v, want 2 and 0 bytes", got)
				}
			case <-time.After(testTimeout):
				t.Fatal("the splice still runs after its session ended: the connection was left half-closed")
			}
		})
	}
}

// TestSpliceTCP runs a stream through SpliceTCP as a server does: opened
// after the reply, closed once with the counts; a refusal calls neither.
func TestSpliceTCP(t *testing.T) {
	t.Parallel()
	target := startTCPEcho(t)
	var dialer net.Dialer
	t.Run("echo", func(t *testing.T) {
		t.Parallel()
		local, remote := streamPair(t)
		var opened atomic.Int32
		closed := make(chan spliced, 2)
		err := (*Parking)(nil).SpliceTCP(context.Background(), remote, dialer.DialContext, target, testTimeout,
			func() { opened.Add(1) }, func(sent, received int64) { closed <- spliced{sent, received} })
		if err != nil {
			t.Fatal(err)
		}
		if n := opened.Load(); n != 1 {
			t.Fatalf("opened called %d times before SpliceTCP returned, want 1", n)
		}
		local.SetDeadline(time.Now().Add(testTimeout))
		if err := mux.ReadReply(local); err != nil {
			t.Fatal(err)
		}
		local.Write([]byte("hello"))
		local.Close()
		if got, err := io.ReadAll(local); err != nil || string(got) != "hello" {
			t.Fatalf("echo = %q, %v", got, err)
		}
		select {
		case got := <-closed:
			if got != (spliced{5, 5}) {
				t.Errorf("closed reported %+v, want 5 and 5 bytes", got)
			}
		case <-time.After(testTimeout):
			t.Fatal("closed not called after both sides ended")
		}
	})
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		local, remote := streamPair(t)
		called := false
		refused := closedPort(t)
		err := (*Parking)(nil).SpliceTCP(context.Background(), remote, dialer.DialContext, refused, testTimeout,
			func() { called = true }, func(int64, int64) { called = true })
		wantRefusal(t, err, mux.CodeRefused, "connection refused by "+refused)
		local.SetDeadline(time.Now().Add(testTimeout))
		wantRefusal(t, mux.ReadReply(local), mux.CodeRefused, "connection refused by "+refused)
		if called {
			t.Error("opened or closed called for a refused stream")
		}
	})
}

// TestSpliceIdleCost checks what an idle splice holds: no buffer, and
// goroutines whose stacks did not grow with the caller's, although the
// caller went deep (as a server's does, dialing) before splicing.
func TestSpliceIdleCost(t *testing.T) {
	const n = 200
	ends := make([][2]*net.TCPConn, n)
	for i := range ends {
		ends[i][0], _ = tcpPair(t)
		ends[i][1], _ = tcpPair(t)
	}
	res := make(chan spliced, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(start)
	startSize := start[0].Value.Uint64()
	for i := range ends {
		var wg sync.WaitGroup
		wg.Go(func() {
			deep(64, func() {
				Splice(ends[i][0], ends[i][1], func(aToB, bToA int64) { res <- spliced{aToB, bToA} })
			})
		})
		wg.Wait()
	}
	// Every direction waiting: a splice starts with a burst, which ends
	// after burstIdle without data.
	for deadline := time.Now().Add(testTimeout); pipeGoroutines() < 2*n && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	metrics.Read(start)
	startSize = max(startSize, start[0].Value.Uint64())
	heap := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	stacks := (int64(after.StackInuse) - int64(before.StackInuse)) / n
	t.Logf("per idle splice: %d B of heap, %d B of stacks (goroutines start with %d B)", heap, stacks, startSize)
	// Two goroutines and the splice itself come to about 1.3 KiB; a
	// buffer of 1 KiB in each direction would put it over 2 KiB.
	if heap > 2048 {
		t.Errorf("an idle splice holds %d B of heap, want at most 2048: a buffer while idle?", heap)
	}
	// The waits fit in the stack a goroutine starts with (race-detector
	// frames need more).
	if limit := 2 * int64(startSize) * 9 / 8; stacks > limit && !raceEnabled() {
		t.Errorf("an idle splice holds %d B of stacks, want at most %d", stacks, limit)
	}
	for i := range ends {
		ends[i][0].Close()
		ends[i][1].Close()
	}
	for range n {
		<-res
	}
}

// deep calls f from depth frames down, each with a kilobyte of stack.
//
//go:noinline
func deep(depth int, f func()) byte {
	var pad [1024]byte
	pad[depth%len(pad)] = byte(depth)
	if depth == 0 {
		f()
		return pad[0]
	}
	return deep(depth-1, f) + pad[depth%len(pad)]
}

// TestPipeGoroutines checks that Pipe carries one direction on the
// caller's goroutine, which would otherwise only wait: an idle Pipe costs
// two goroutines, the caller's among them.
func TestPipeGoroutines(t *testing.T) {
	const n = 20
	res := make(chan spliced, n)
	var ends []io.Closer
	for range n {
		a, _ := tcpPair(t)
		b, _ := tcpPair(t)
		ends = append(ends, a)
		go func() {
			aToB, bToA := Pipe(a, b)
			res <- spliced{aToB, bToA}
		}()
	}
	got := pipeGoroutines()
	for i := 0; i < 100 && got != 2*n; i++ {
		time.Sleep(10 * time.Millisecond)
		got = pipeGoroutines()
	}
	if got != 2*n {
		t.Errorf("%d idle Pipes run %d goroutines, want %d", n, got, 2*n)
	}
	for _, c := range ends {
		c.Close()
	}
	for range n {
		<-res
	}
}

// pipeGoroutines counts the goroutines in Pipe or in a splice's wait.
func pipeGoroutines() int {
	var buf bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&buf, 2) // as runtime.Stack(all) prints them
	count := 0
	for _, g := range bytes.Split(buf.Bytes(), []byte("\n\n")) {
		if bytes.Contains(g, []byte("relay.Pipe(")) || bytes.Contains(g, []byte("relay.(*splice).wait(")) {
			count++
		}
	}
	return count
}

// TestPipe runs the server side of a KindTCP stream as the server package
// does (read header, dial, reply, Pipe) against a TCP service that answers
// only after the request's FIN, so the half-close must cross Pipe.
func TestPipe(t *testing.T) {
	t.Parallel()
	forEachTransport(t, func(t *testing.T, tr transport) {
		svc, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var svcWG sync.WaitGroup
		t.Cleanup(func() { svc.Close(); svcWG.Wait() })
		svcWG.Go(func() {
			for {
				c, err := svc.Accept()
				if err != nil {
					return
				}
				svcWG.Go(func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(testTimeout))
					n, _ := io.Copy(io.Discard, c)
					fmt.Fprintf(c, "got %d bytes", n)
				})
			}
		})

		type piped struct{ aToB, bToA int64 }
		pipes := make(chan piped, 1)
		ts := startTunnelServer(t, serverOptions{tr: tr})
		client, server := ts.dial(t, nil)
		serveStreams(t, server, func(st *mux.Stream) {
			h, err := mux.ReadHeaderTimeout(st, testTimeout)
			if err != nil {
				return
			}
			c, err := net.Dial("tcp", h.Target)
			if err := mux.WriteReply(st, err); err != nil || c == nil {
				return
			}
			a, b := Pipe(st, c)
			pipes <- piped{a, b}
		})

		st, err := mux.Open(client, mux.Header{Kind: mux.KindTCP, Target: svc.Addr().String()}, testTimeout)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(testTimeout))
		req := bytes.Repeat([]byte("r"), 100<<10)
		if _, err := st.Write(req); err != nil {
			t.Fatal(err)
		}
		st.Close() // FIN: the service answers only after it
		got, err := io.ReadAll(st)
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		want := fmt.Sprintf("got %d bytes", len(req))
		if string(got) != want {
			t.Fatalf("answer = %q, want %q", got, want)
		}
		select {
		case p := <-pipes:
			if p.aToB != int64(len(req)) || p.bToA != int64(len(want)) {
				t.Errorf("Pipe copied %d and %d bytes, want %d and %d", p.aToB, p.bToA, len(req), len(want))
			}
		case <-time.After(testTimeout):
			t.Fatal("Pipe did not return after both sides closed")
		}
	})
}

// Splice is Parking.Splice with nothing parked and no context, as the
// tests of the splice itself use it.
func Splice(a, b io.ReadWriteCloser, done func(aToB, bToA int64)) {
	var p *Parking
	p.Splice(context.Background(), a, b, done)
}
