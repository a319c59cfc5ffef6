package transfer

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// largestWrite records the largest Write made through a stream.
type largestWrite struct {
	io.ReadWriteCloser
	largest *atomic.Int64
}

func (w largestWrite) Write(p []byte) (int, error) {
	for {
		old := w.largest.Load()
		if int64(len(p)) <= old || w.largest.CompareAndSwap(old, int64(len(p))) {
			break
		}
	}
	return w.ReadWriteCloser.Write(p)
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
	h.wrapClient = func(rw io.ReadWriteCloser) io.ReadWriteCloser { return largestWrite{rw, &client} }
	h.wrapServer = func(rw io.ReadWriteCloser) io.ReadWriteCloser { return largestWrite{rw, &server} }
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
