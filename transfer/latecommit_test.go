package transfer

import (
	"bytes"
	"context"
	"errors"
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

// vanishingPush plays a client that sends the manifest entries, then on
// one data stream what data sends, and goes away without End or Done
// once the server holds it all: wrote reports that. It returns when the
// server has finished with the transfer.
func vanishingPush(t *testing.T, h *harness, entries []Entry, data func(c *conn) error, wrote func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rw, err := h.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cc := newConn(ctx, rw, 10*time.Second)
	defer cc.close()
	hl := hello{op: opPush, chunkSize: MinChunkSize, streams: 1, dest: "in"}
	if err := cc.send(frameHello, func(e *enc) { encodeHello(e, &hl) }); err != nil {
		t.Fatal(err)
	}
	var pe planEnd
	err = cc.writeWhile(func() error {
		return writeManifest(cc, entries, &manifestEnd{count: uint64(len(entries))})
	}, func() (err error) {
		_, pe, err = readPlan(cc, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	rw, err = h.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dc := newConn(ctx, rw, 10*time.Second)
	if err := dc.send(frameHello, func(e *enc) { encodeHello(e, &hello{op: opData, id: pe.id}) }); err != nil {
		t.Fatal(err)
	}
	if err := data(dc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server to write what was sent", wrote)
	dc.close()
	cc.close()
	waitFor(t, "the server to end the transfer", func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		return len(h.srv.transfers) == 0
	})
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

// journalHolds reports whether the journal of e under dir lists n
// chunks.
func journalHolds(dir string, e *Entry, n int) func() bool {
	_, journal := partNames(filepath.Join(dir, e.Path), resumeID(e, MinChunkSize))
	return func() bool {
		fi, err := os.Stat(journal)
		return err == nil && fi.Size() == int64(journalHeaderLen+n*journalRecordLen)
	}
}

// A sender that goes away after its last chunk, before its FileEnd: the
// server commits the file at once, with the whole-file hash of the
// chunks it verified. And a tree of small files that went away before
// the End that would have flushed their batch: they are committed too.
// But a file whose chunks came partly from a previous run, which this
// sender never confirmed, is not: its partial file stays for the next
// run, whose sender finds the chunks that differ from the source.
func TestSenderGoneAfterLastChunk(t *testing.T) {
	t.Parallel()
	const cs = MinChunkSize
	t.Run("one file", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, ServerConfig{}, Endpoint{Write: true})
		data := randBytes(21, 8*cs+5)
		e := fileEntry("f.bin", int64(len(data)))
		in := filepath.Join(h.ep.Root, "in")
		vanishingPush(t, h, []Entry{e}, func(c *conn) error {
			for i := 0; i*cs < len(data); i++ {
				if err := sendRawChunk(c, rawChunk{index: uint32(i), data: data[i*cs : min(len(data), (i+1)*cs)]}); err != nil {
					return err
				}
			}
			return nil
		}, journalHolds(in, &e, 9))
		if got, err := os.ReadFile(filepath.Join(in, "f.bin")); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("the server did not commit the file whose every chunk it holds: %d bytes, %v", len(got), err)
		}
		if p := partials(t, h.ep.Root); len(p) != 0 {
			t.Errorf("partials left: %v", p)
		}
	})

	t.Run("small files", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, ServerConfig{}, Endpoint{Write: true})
		entries := []Entry{dirEntry("d")}
		var files [][]byte
		for i := range 5 {
			d := randBytes(uint64(30+i), 1000+i)
			files = append(files, d)
			entries = append(entries, fileEntry("d/"+itoa(i), int64(len(d))))
		}
		in := filepath.Join(h.ep.Root, "in")
		vanishingPush(t, h, entries, func(c *conn) error {
			for i, d := range files {
				if err := sendFile(c, uint32(i+1), d, cs); err != nil {
					return err
				}
			}
			return nil
		}, func() bool {
			// Each is sealed, its times set, before it waits for its batch.
			parts, _ := filepath.Glob(filepath.Join(in, "d", ".*.part"))
			sealed := 0
			for _, p := range parts {
				if fi, err := os.Stat(p); err == nil && fi.ModTime().Equal(baseTime) {
					sealed++
				}
			}
			return sealed == len(files) || !canSyncFS
		})
		for i, d := range files {
			if got, err := os.ReadFile(filepath.Join(in, "d", itoa(i))); err != nil || !bytes.Equal(got, d) {
				t.Errorf("file %d: %d bytes, %v; want it committed", i, len(got), err)
			}
		}
		if p := partials(t, h.ep.Root); len(p) != 0 {
			t.Errorf("partials left: %v", p)
		}
	})

	t.Run("resumed chunks unconfirmed", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, ServerConfig{}, Endpoint{Write: true})
		n := 6
		old := randBytes(40, n*cs)
		// The source was rewritten since, its size and time kept: its
		// first chunk differs from the one the partial file holds.
		cur := bytes.Clone(old)
		copy(cur, randBytes(41, cs))
		e := fileEntry("f.bin", int64(len(old)))
		in := filepath.Join(h.ep.Root, "in")
		leavePartial(t, h.ep.Root, "in", e, old, cs, []int{0, 1, 2, 3, 4})
		vanishingPush(t, h, []Entry{e}, func(c *conn) error {
			return sendRawChunk(c, rawChunk{index: uint32(n - 1), data: cur[(n-1)*cs:]})
		}, journalHolds(in, &e, n))
		if _, err := os.Stat(filepath.Join(in, "f.bin")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the server committed a file whose resumed chunks its sender never confirmed (%v)", err)
		}
		src := t.TempDir()
		makeTree(t, src, []node{{path: "f.bin", data: cur, mode: 0o644}})
		cl := h.client()
		cl.ChunkSize = cs
		st, err := cl.Send(context.Background(), []string{filepath.Join(src, "f.bin")}, "in")
		if err != nil {
			t.Fatalf("rerun: %v (server: %v)", err, h.serverErrs())
		}
		if got, err := os.ReadFile(filepath.Join(in, "f.bin")); err != nil || !bytes.Equal(got, cur) {
			t.Fatalf("after the rerun: %d bytes, %v; want the source's current content", len(got), err)
		}
		if st.BytesSent != cs {
			t.Errorf("the rerun sent %d bytes; want only the chunk that changed (%d)", st.BytesSent, cs)
		}
	})
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

// A fetch whose server goes away after the last chunk, before the
// FileEnd: the client commits the file, whose every chunk it verified.
func TestFetchServerGoneAfterLastChunk(t *testing.T) {
	t.Parallel()
	const cs = MinChunkSize
	data := randBytes(60, 5*cs+17)
	srv := newFakeServer(t, hostilePull([]Entry{fileEntry("f.bin", int64(len(data)))}, func(c *conn) error {
		for i := 0; i*cs < len(data); i++ {
			if err := sendRawChunk(c, rawChunk{index: uint32(i), data: data[i*cs : min(len(data), (i+1)*cs)]}); err != nil {
				return err
			}
		}
		c.abort()
		return errCut
	}))
	dst := t.TempDir()
	cl := &Client{Open: srv.open, Reserve: -1, ChunkSize: cs, Parallel: 1, Limits: Limits{IdleTimeout: 10 * time.Second}}
	st, err := cl.Fetch(context.Background(), []string{"f.bin"}, dst)
	if err == nil {
		t.Fatal("a fetch whose server went away succeeded")
	}
	if got, rerr := os.ReadFile(filepath.Join(dst, "f.bin")); rerr != nil || !bytes.Equal(got, data) {
		t.Fatalf("the client did not commit the file whose every chunk it holds: %d bytes, %v (fetch: %v)", len(got), rerr, err)
	}
	if st.Files != 1 {
		t.Errorf("the fetch reports %d files committed, want 1", st.Files)
	}
	if p := partials(t, dst); len(p) != 0 {
		t.Errorf("partials left: %v", p)
	}
}
