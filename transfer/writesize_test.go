package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// largestWrite records the largest Write made through a yamux stream,
// whose deadlines it keeps, as conn uses them.
type largestWrite struct {
	*yamux.Stream
	largest *atomic.Int64
}

func (w largestWrite) Write(p []byte) (int, error) {
	for {
		old := w.largest.Load()
		if int64(len(p)) <= old || w.largest.CompareAndSwap(old, int64(len(p))) {
			break
		}
	}
	return w.Stream.Write(p)
}

// TestWritesBounded checks that both ends write a stream in pieces of at
// most maxWrite bytes, whatever the chunk size (yamux keeps a buffer as
// large as the largest frame its session has sent, for the session's
// life), and that the file arrives intact both ways.
func TestWritesBounded(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	data := randBytes(7, 3*DefaultChunkSize+12345)
	makeTree(t, src, []node{{path: "big.bin", data: data, mode: 0o640}})
	h := newHarness(t, ServerConfig{}, Endpoint{Read: true, Write: true})
	h.useYamux()
	var client, server atomic.Int64
	h.wrapClient = func(rw io.ReadWriteCloser) io.ReadWriteCloser { return largestWrite{rw.(*yamux.Stream), &client} }
	h.wrapServer = func(rw io.ReadWriteCloser) io.ReadWriteCloser { return largestWrite{rw.(*yamux.Stream), &server} }
	cl := h.client()
	ctx := context.Background()
	if _, err := cl.Send(ctx, []string{filepath.Join(src, "big.bin")}, "in"); err != nil {
		t.Fatalf("send: %v (server: %v)", err, h.serverErrs())
	}
	if _, err := cl.Fetch(ctx, []string{"in/big.bin"}, dst); err != nil {
		t.Fatalf("fetch: %v (server: %v)", err, h.serverErrs())
	}
	for _, path := range []string{filepath.Join(h.ep.Root, "in", "big.bin"), filepath.Join(dst, "big.bin")} {
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes (%v), want the %d sent", path, len(got), err, len(data))
		}
	}
	// A chunk is larger than maxWrite: the largest write is exactly one
	// piece of it, on the sending end of each direction.
	for _, end := range []struct {
		name    string
		largest int64
	}{{"client (send)", client.Load()}, {"server (fetch)", server.Load()}} {
		if end.largest != maxWrite {
			t.Errorf("the %s's largest write to a stream was %d bytes, want %d (maxWrite)", end.name, end.largest, maxWrite)
		}
	}
}

// TestWriteTimeoutPerPiece checks that the write timeout bounds each
// piece of a frame, not the whole frame: a peer that reads slowly but
// steadily keeps a frame going that takes several timeouts to send, and
// one that stops reading is still caught.
func TestWriteTimeoutPerPiece(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	for _, tr := range []struct {
		name string
		pair func(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser)
	}{
		{"deadlines", func(*testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) { return netPipe(true) }},
		{"timer", func(*testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) { return netPipe(false) }},
		// yamux's deadline error is not os.ErrDeadlineExceeded.
		{"yamux", yamuxPair},
	} {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			a, b := tr.pair(t)
			defer b.Close()
			c := newConn(context.Background(), a, timeout)
			defer c.close()
			// 64 KiB every 25 ms: a piece in about 100 ms, the frame's
			// eight in about 800 ms.
			frame := make([]byte, 8*maxWrite)
			read := make(chan int64, 1)
			go func() {
				var n int64
				buf := make([]byte, 64<<10)
				for n < int64(len(frame)) {
					time.Sleep(25 * time.Millisecond)
					m, err := io.ReadFull(b, buf)
					n += int64(m)
					if err != nil {
						break
					}
				}
				read <- n
			}()
			start := time.Now()
			if err := c.write(frame); err != nil {
				t.Fatalf("a frame read steadily failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
			}
			took := time.Since(start)
			if n := <-read; n != int64(len(frame)) {
				t.Fatalf("the peer read %d bytes, want %d", n, len(frame))
			}
			if took < 2*timeout {
				t.Fatalf("the frame took %v, less than two timeouts: the test shows nothing", took)
			}

			// The peer has stopped reading: the next write times out.
			err := c.write(frame)
			if !errors.Is(err, ErrTimeout) {
				t.Errorf("a write to a peer that stopped reading returned %v, want ErrTimeout", err)
			}
		})
	}
}

// yamuxPair returns the two ends of a stream of a yamux session over a
// pipe, closed when the test ends.
func yamuxPair(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
	cl, srv := yamuxSessions(t, 0)
	t.Cleanup(func() {
		cl.Close()
		srv.Close()
	})
	st, err := cl.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	peer, err := srv.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	return st, peer
}
