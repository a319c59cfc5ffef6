package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// treeNodes is a tree with nested and empty directories, empty and
// multi-chunk files, and varied modes.
func treeNodes() []node {
	return []node{
		{path: "top", dir: true, mode: 0o750},
		{path: "top/empty", data: nil, mode: 0o600},
		{path: "top/small.txt", data: []byte("hello, burrow\n"), mode: 0o644},
		{path: "top/exec.sh", data: []byte("#!/bin/sh\necho hi\n"), mode: 0o755},
		{path: "top/a", dir: true},
		{path: "top/a/b", dir: true, mode: 0o700},
		{path: "top/a/b/c", dir: true},
		{path: "top/a/b/c/deep.bin", data: randBytes(1, 300<<10)},
		{path: "top/a/empty-dir", dir: true, mode: 0o711},
		{path: "top/big.bin", data: randBytes(2, 5<<20+12345)},
		{path: "top/exact.bin", data: randBytes(3, 2*MinChunkSize)},
		{path: "top/zeros.bin", data: make([]byte, 3<<20)},
		{path: "top/ro", dir: true, mode: 0o555},
		{path: "top/ro/inside", data: []byte("read-only dir"), mode: 0o444},
		{path: "top/unicodé ✓.txt", data: []byte("names are UTF-8")},
	}
}

func transports(t *testing.T, body func(t *testing.T, yamux bool)) {
	for _, tc := range []struct {
		name  string
		yamux bool
	}{{"pipe", false}, {"yamux", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body(t, tc.yamux)
		})
	}
}

func TestPushPullTree(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		chunk     int
		compress  bool
		parallel  int
		transport string
	}{
		{name: "defaults", transport: "pipe"},
		{name: "small chunks parallel 8", chunk: MinChunkSize, parallel: 8, transport: "pipe"},
		{name: "compressed", chunk: 1 << 20, compress: true, transport: "pipe"},
		{name: "yamux", chunk: 256 << 10, transport: "yamux"},
		{name: "one stream", parallel: 1, transport: "yamux"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := t.TempDir()
			makeTree(t, src, treeNodes())
			h := newHarness(t, ServerConfig{}, Endpoint{Read: true, Write: true})
			if tc.transport == "yamux" {
				h.useYamux()
			}
			cl := h.client()
			cl.ChunkSize, cl.Compress, cl.Parallel = tc.chunk, tc.compress, tc.parallel
			var events []Event
			cl.Progress = func(e Event) { events = append(events, e) }
			ctx := context.Background()

			st, err := cl.Send(ctx, []string{filepath.Join(src, "top")}, "inbox/x")
			if err != nil {
				t.Fatalf("send: %v (server: %v)", err, h.serverErrs())
			}
			want := snapshot(t, src)
			sameTree(t, sub(want, "top"), sub(snapshot(t, h.ep.Root), "inbox/x/top"))
			if st.Files != 9 || st.Bytes != int64(300<<10+5<<20+12345+2*MinChunkSize+3<<20+14+18+13+15) {
				t.Errorf("stats %+v", st)
			}
			if len(partials(t, h.ep.Root)) != 0 {
				t.Errorf("partial files left: %v", partials(t, h.ep.Root))
			}
			if tc.compress && st.BytesSent >= st.Bytes {
				t.Errorf("compressed send moved %d bytes for %d", st.BytesSent, st.Bytes)
			}
			checkEvents(t, events, 9)

			// Fetch it back.
			dst := t.TempDir()
			st, err = cl.Fetch(ctx, []string{"inbox/x/top"}, dst)
			if err != nil {
				t.Fatalf("fetch: %v (server: %v)", err, h.serverErrs())
			}
			sameTree(t, want, snapshot(t, dst))
			if st.Files != 9 {
				t.Errorf("fetch stats %+v", st)
			}

			// A second send of the same tree moves nothing.
			st, err = cl.Send(ctx, []string{filepath.Join(src, "top")}, "inbox/x")
			if err != nil {
				t.Fatalf("resend: %v", err)
			}
			if st.Files != 0 || st.Skipped != 9 || st.BytesSent != 0 {
				t.Errorf("resend stats %+v", st)
			}
			// ... and a second fetch neither.
			st, err = cl.Fetch(ctx, []string{"inbox/x/top"}, dst)
			if err != nil {
				t.Fatalf("refetch: %v", err)
			}
			if st.Files != 0 || st.Skipped != 9 || st.BytesSent != 0 {
				t.Errorf("refetch stats %+v", st)
			}
		})
	}
}

// checkEvents checks the event stream of a transfer of n files.
func checkEvents(t *testing.T, events []Event, n int) {
	t.Helper()
	count := map[EventKind]int{}
	for _, e := range events {
		count[e.Kind]++
	}
	if count[EventPlan] != 1 || count[EventFileStart] != n || count[EventFileDone] != n {
		t.Errorf("events: %v", count)
	}
	last := events[len(events)-1]
	if last.Bytes != last.TotalBytes || last.Files != last.TotalFiles {
		t.Errorf("last event %+v", last)
	}
}

func TestManySmallFiles(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	nodes := []node{{path: "many", dir: true}}
	for d := range 20 {
		nodes = append(nodes, node{path: fmt.Sprintf("many/d%02d", d), dir: true})
		for f := range 100 {
			nodes = append(nodes, node{path: fmt.Sprintf("many/d%02d/f%03d", d, f), data: randBytes(uint64(d*100+f), d*37+f)})
		}
	}
	makeTree(t, src, nodes)
	h := newHarness(t, ServerConfig{}, Endpoint{Read: true, Write: true})
	h.useYamux()
	cl := h.client()
	start := time.Now()
	st, err := cl.Send(context.Background(), []string{filepath.Join(src, "many")}, "")
	if err != nil {
		t.Fatalf("send: %v (server: %v)", err, h.serverErrs())
	}
	if st.Files != 2000 {
		t.Errorf("stats %+v", st)
	}
	sameTree(t, snapshot(t, src), snapshot(t, h.ep.Root))
	dst := t.TempDir()
	if _, err := cl.Fetch(context.Background(), []string{"many"}, dst); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	sameTree(t, snapshot(t, src), snapshot(t, dst))
	t.Logf("2,000 files there and back in %v", time.Since(start))
}

func TestStreamRoundTrip(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 1, MinChunkSize, 3*MinChunkSize + 17} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, ServerConfig{}, Endpoint{Read: true, Write: true})
			cl := h.client()
			cl.ChunkSize = MinChunkSize
			cl.Compress = size%2 == 1
			data := randBytes(uint64(size), size)
			st, err := cl.SendStream(context.Background(), bytes.NewReader(data), "/in/dir.tar")
			if err != nil {
				t.Fatalf("send stream: %v (server: %v)", err, h.serverErrs())
			}
			if st.Files != 1 || st.Bytes != int64(size) {
				t.Errorf("stats %+v", st)
			}
			got, err := os.ReadFile(filepath.Join(h.ep.Root, "in", "dir.tar"))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("stored %d bytes, %v", len(got), err)
			}
			var out bytes.Buffer
			st, err = cl.FetchStream(context.Background(), "in/dir.tar", &out)
			if err != nil {
				t.Fatalf("fetch stream: %v (server: %v)", err, h.serverErrs())
			}
			if !bytes.Equal(out.Bytes(), data) || st.Bytes != int64(size) {
				t.Fatalf("fetched %d bytes of %d, stats %+v", out.Len(), size, st)
			}
			// The same name again: never overwrite.
			_, err = cl.SendStream(context.Background(), bytes.NewReader(data), "in/dir.tar")
			if !isConflict(err) {
				t.Fatalf("second stream: %v", err)
			}
			if p := partials(t, h.ep.Root); len(p) != 0 {
				t.Errorf("partials left: %v", p)
			}
		})
	}
}

func isConflict(err error) bool { return errors.Is(err, ErrConflict) }

// TestLargeFile moves a 64 MiB file in 16 chunks over 4 streams, both
// ways.
func TestLargeFile(t *testing.T) {
	t.Parallel()
	size := 64 << 20
	if testing.Short() {
		size = 16 << 20
	}
	src := t.TempDir()
	data := randBytes(64, size+4321)
	makeTree(t, src, []node{{path: "large.bin", data: data, mode: 0o600}})
	h := newHarness(t, ServerConfig{}, Endpoint{Read: true, Write: true})
	h.useYamux()
	cl := h.client()
	var maxStreams, streams atomic.Int32
	open := cl.Open
	cl.Open = func(ctx context.Context) (io.ReadWriteCloser, error) {
		n := streams.Add(1)
		for m := maxStreams.Load(); n > m && !maxStreams.CompareAndSwap(m, n); m = maxStreams.Load() {
		}
		rw, err := open(ctx)
		return &countClose{ReadWriteCloser: rw, n: &streams}, err
	}
	st, err := cl.Send(context.Background(), []string{filepath.Join(src, "large.bin")}, "")
	if err != nil {
		t.Fatal(err)
	}
	if st.BytesSent != int64(len(data)) || st.Files != 1 {
		t.Errorf("stats %+v", st)
	}
	if maxStreams.Load() < 5 {
		t.Errorf("at most %d streams at once; want the control stream and 4 data streams", maxStreams.Load())
	}
	dst := t.TempDir()
	if _, err := cl.Fetch(context.Background(), []string{"large.bin"}, dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, snapshot(t, src), snapshot(t, dst))
	sameTree(t, snapshot(t, src), snapshot(t, h.ep.Root))
}

type countClose struct {
	io.ReadWriteCloser
	n    *atomic.Int32
	once sync.Once
}

func (c *countClose) Close() error {
	c.once.Do(func() { c.n.Add(-1) })
	return c.ReadWriteCloser.Close()
}
