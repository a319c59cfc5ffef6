package transfer

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Tests of the commit of a transfer stopped late: after its last chunk,
// before or while the receiver commits. There must always be a way
// forward: a complete, verified partial file is committed by the next
// run, or at once when the sender has gone after its last chunk, and a
// rerun waits for a commit still in flight.

// leavePartial plays a receiver stopped after writing the chunks of data
// listed (all when nil) as entry e under dir/dest: planned, written and
// journaled, then closed before any FileEnd, and not salvaged.
func leavePartial(t *testing.T, dir, dest string, e Entry, data []byte, cs int, chunks []int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, dest), 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	r := newReceiver(recvConfig{root: root, dest: dest, chunkSize: cs, limits: Limits{}.withDefaults(), reserve: -1})
	defer r.close()
	r.entries = []Entry{e}
	if _, err := r.plan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if chunks == nil {
		for i := range int(chunkCount(e.Size, cs)) {
			chunks = append(chunks, i)
		}
	}
	for _, i := range chunks {
		d := data[i*cs : min(len(data), (i+1)*cs)]
		h := chunkHeader{index: uint32(i), size: uint32(len(d)), hash: chunkHash(d)}
		if _, err := r.expect(&h); err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.write(&h, d, len(d)); err != nil {
			t.Fatal(err)
		}
	}
}

// The regression of a send or fetch interrupted after its last chunk:
// the partial file holds every chunk, its journal every record, and the
// rerun, which finds them all and so sends none, must still commit the
// file, without sending any of it again. Also with the partial file
// sealed read-only by a commit whose fsync failed (a full disk):
// reopening it for writing must not fail (a receiver not running as root
// would be refused).
func TestRerunCommitsCompletePartial(t *testing.T) {
	t.Parallel()
	const cs = MinChunkSize
	size := 10*cs + 123
	for _, tc := range []struct {
		name string
		pull bool
		mode fs.FileMode
		seal bool // the first run's commit got as far as the chmod
	}{
		{name: "send", mode: 0o644},
		{name: "fetch", pull: true, mode: 0o644},
		{name: "send, sealed read-only", mode: 0o400, seal: true},
		{name: "fetch, sealed read-only", pull: true, mode: 0o400, seal: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := randBytes(11, size)
			e := Entry{Path: "f.bin", Type: TypeFile, Size: int64(size), Mode: tc.mode, ModTime: baseTime}
			h := newHarness(t, ServerConfig{}, Endpoint{Read: true, Write: true})
			src, dst, dest := t.TempDir(), h.ep.Root, "in"
			if tc.pull {
				src, dst, dest = h.ep.Root, t.TempDir(), ""
			}
			makeTree(t, src, []node{{path: "f.bin", data: data, mode: tc.mode}})
			leavePartial(t, dst, dest, e, data, cs, nil)
			if tc.seal {
				part, _ := partNames(filepath.Join(dst, dest, "f.bin"), resumeID(&e, cs))
				if err := os.Chmod(part, tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			if p := partials(t, dst); len(p) != 2 {
				t.Fatalf("the interrupted run left %v, want a partial file and its journal", p)
			}
			cl := h.client()
			cl.ChunkSize = cs
			var st Stats
			var err error
			if tc.pull {
				st, err = cl.Fetch(context.Background(), []string{"f.bin"}, dst)
			} else {
				st, err = cl.Send(context.Background(), []string{filepath.Join(src, "f.bin")}, dest)
			}
			if err != nil {
				t.Fatalf("rerun: %v (server: %v)", err, h.serverErrs())
			}
			got, err := os.ReadFile(filepath.Join(dst, dest, "f.bin"))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("after the rerun: %d bytes, %v", len(got), err)
			}
			if st.Files != 1 || st.BytesSent != 0 || st.BytesResumed != int64(size) {
				t.Errorf("rerun: %d files, %d bytes sent, %d resumed; want 1 file, all %d bytes resumed", st.Files, st.BytesSent, st.BytesResumed, size)
			}
			if fi, err := os.Stat(filepath.Join(dst, dest, "f.bin")); err != nil || fi.Mode().Perm() != tc.mode {
				t.Errorf("committed file: %v, %v; want mode %v", fi, err, tc.mode)
			}
			if p := partials(t, dst); len(p) != 0 {
				t.Errorf("partials left: %v", p)
			}
		})
	}
}

// waitFor polls cond for up to 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// gatedSync holds the first partial file's fsync until the gate opens.
type gatedSync struct {
	partFile
	once    *sync.Once
	entered chan<- struct{}
	gate    <-chan struct{}
}

func (g gatedSync) Sync() error {
	g.once.Do(func() {
		close(g.entered)
		<-g.gate
	})
	return g.partFile.Sync()
}

// A rerun that arrives while the interrupted run's commit is still in
// flight (its client gone, the server fsyncing the file) waits for that
// commit rather than planning against the partial file it is about to
// rename, and then finds the file done.
func TestRerunWaitsForCommitInFlight(t *testing.T) {
	t.Parallel()
	const cs = MinChunkSize
	entered, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cfg := ServerConfig{wrap: func(name string, f partFile) partFile {
		return gatedSync{partFile: f, once: &once, entered: entered, gate: gate}
	}}
	h := newHarness(t, cfg, Endpoint{Write: true})
	h.useYamux()
	src := t.TempDir()
	data := randBytes(50, 4<<20)
	makeTree(t, src, []node{{path: "big.bin", data: data}})
	file := filepath.Join(src, "big.bin")
	cl := h.client()
	cl.ChunkSize = cs

	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := cl.Send(ctx1, []string{file}, "in")
		first <- err
	}()
	select {
	case <-entered:
	case err := <-first:
		t.Fatalf("the first send ended before its commit: %v", err)
	}
	cancel1()
	if err := <-first; err == nil {
		t.Fatal("the interrupted send succeeded")
	}

	second := make(chan error, 1)
	go func() {
		_, err := cl.Send(context.Background(), []string{file}, "in")
		second <- err
	}()
	// Let the rerun reach its plan while the commit is held.
	waitFor(t, "the rerun to start", func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		return len(h.srv.transfers) == 2
	})
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-second:
		t.Fatalf("the rerun ended while the first run's commit was in flight: %v", err)
	default:
	}
	close(gate)
	if err := <-second; err != nil {
		t.Fatalf("rerun: %v (server: %v)", err, h.serverErrs())
	}
	if got, err := os.ReadFile(filepath.Join(h.ep.Root, "in", "big.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the rerun: %d bytes, %v", len(got), err)
	}
	if p := partials(t, h.ep.Root); len(p) != 0 {
		t.Errorf("partials left: %v", p)
	}
}
