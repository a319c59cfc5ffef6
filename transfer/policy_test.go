package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestOverwritePolicies(t *testing.T) {
	t.Parallel()
	old := baseTime.Add(-time.Hour)
	newer := baseTime.Add(time.Hour)
	for _, tc := range []struct {
		policy    Overwrite
		existing  []node // in the destination, under d/
		wantErr   error
		wantPaths []string // in the conflict error
		want      map[string]string
		files     int
	}{
		{
			policy: OverwriteNever,
			existing: []node{
				{path: "d", dir: true}, {path: "d/a", data: []byte("old a"), modTime: old},
				{path: "d/b", data: []byte("old b"), modTime: newer}, {path: "d/same", data: []byte("same"), modTime: baseTime},
			},
			wantErr: ErrConflict, wantPaths: []string{"d/a", "d/b"},
		},
		{
			policy: OverwriteNewer,
			existing: []node{
				{path: "d", dir: true}, {path: "d/a", data: []byte("old a"), modTime: old},
				{path: "d/b", data: []byte("old b"), modTime: newer}, {path: "d/same", data: []byte("same"), modTime: baseTime},
			},
			want:  map[string]string{"d/a": "new a", "d/b": "old b", "d/same": "same", "d/c": "new c"},
			files: 2,
		},
		{
			policy: OverwriteAlways,
			existing: []node{
				{path: "d", dir: true}, {path: "d/a", data: []byte("old a"), modTime: old},
				{path: "d/b", data: []byte("old b"), modTime: newer},
				// Same size and time, different content: caught by hash.
				{path: "d/same", data: []byte("SAME"), modTime: baseTime},
			},
			want:  map[string]string{"d/a": "new a", "d/b": "new b", "d/same": "same", "d/c": "new c"},
			files: 4,
		},
		{
			policy: OverwriteRename,
			existing: []node{
				{path: "d", dir: true}, {path: "d/a", data: []byte("old a"), modTime: old},
				{path: "d/b", data: []byte("old b"), modTime: newer}, {path: "d/b (1)", data: []byte("older b")},
				{path: "d/same", data: []byte("same"), modTime: baseTime},
			},
			want: map[string]string{
				"d/a": "old a", "d/a (1)": "new a", "d/b": "old b", "d/b (1)": "older b", "d/b (2)": "new b",
				"d/same": "same", "d/c": "new c",
			},
			files: 3,
		},
	} {
		for _, dir := range []string{"push", "pull"} {
			t.Run(tc.policy.String()+"/"+dir, func(t *testing.T) {
				t.Parallel()
				src, dst := t.TempDir(), t.TempDir()
				makeTree(t, src, []node{
					{path: "d", dir: true},
					{path: "d/a", data: []byte("new a"), modTime: baseTime},
					{path: "d/b", data: []byte("new b"), modTime: baseTime},
					{path: "d/c", data: []byte("new c"), modTime: baseTime},
					{path: "d/same", data: []byte("same"), modTime: baseTime},
				})
				makeTree(t, dst, tc.existing)
				before := snapshot(t, dst)
				var (
					st  Stats
					err error
				)
				if dir == "push" {
					h := newHarness(t, ServerConfig{}, Endpoint{Root: dst, Write: true})
					cl := h.client()
					cl.Overwrite = tc.policy
					st, err = cl.Send(context.Background(), []string{filepath.Join(src, "d")}, "")
				} else {
					h := newHarness(t, ServerConfig{}, Endpoint{Root: src, Read: true})
					cl := h.client()
					cl.Overwrite = tc.policy
					st, err = cl.Fetch(context.Background(), []string{"d"}, dst)
				}
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						t.Fatalf("got %v, want %v", err, tc.wantErr)
					}
					for _, p := range tc.wantPaths {
						if !strings.Contains(err.Error(), p) {
							t.Errorf("error %q does not name %s", err, p)
						}
					}
					if !strings.Contains(err.Error(), "overwrite policy") {
						t.Errorf("error %q does not say how to fix it", err)
					}
					sameTree(t, before, snapshot(t, dst))
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				for p, want := range tc.want {
					if got, _ := os.ReadFile(filepath.Join(dst, p)); string(got) != want {
						t.Errorf("%s = %q, want %q", p, got, want)
					}
				}
				if st.Files != tc.files {
					t.Errorf("stats %+v, want %d files", st, tc.files)
				}
			})
		}
	}
}

func TestConflictList(t *testing.T) {
	t.Parallel()
	src, dst := t.TempDir(), t.TempDir()
	var nodes []node
	nodes = append(nodes, node{path: "d", dir: true})
	for i := range 30 {
		nodes = append(nodes, node{path: "d/f" + itoa(100+i), data: []byte("new")})
	}
	makeTree(t, src, nodes)
	for i := range nodes[1:] {
		nodes[i+1].data = []byte("existing, longer")
	}
	makeTree(t, dst, nodes)
	h := newHarness(t, ServerConfig{}, Endpoint{Root: dst, Write: true})
	_, err := h.client().Send(context.Background(), []string{filepath.Join(src, "d")}, "")
	var re *RemoteError
	if !errors.As(err, &re) || !errors.Is(err, ErrConflict) || len(re.Paths) != maxErrorPaths {
		t.Fatalf("got %#v", err)
	}
	if !strings.Contains(err.Error(), "30 files already exist") || !strings.Contains(err.Error(), "and 10 more") {
		t.Errorf("message: %v", err)
	}
}

func TestLinks(t *testing.T) {
	t.Parallel()
	nodes := []node{
		{path: "t", dir: true},
		{path: "t/file", data: []byte("target")},
		{path: "t/sub", dir: true},
		{path: "t/sub/up", link: "../file"},
		{path: "t/sub/dir", link: ".."},
		{path: "t/here", link: "file"},
		{path: "t/out", link: "../../etc/passwd"},
		{path: "t/abs", link: "/etc/passwd"},
		{path: "t/dangling", link: "missing"},
		{path: "t/chain", link: "here"},
	}
	for _, tc := range []struct {
		links LinkPolicy
		want  map[string]string // link -> target; absent means skipped
	}{
		{LinksSkip, map[string]string{}},
		{LinksKeep, map[string]string{"t/sub/up": "../file", "t/sub/dir": "..", "t/here": "file", "t/chain": "here"}},
	} {
		for _, dir := range []string{"push", "pull"} {
			t.Run(tc.links.String()+"/"+dir, func(t *testing.T) {
				t.Parallel()
				src, dst := t.TempDir(), t.TempDir()
				makeTree(t, src, nodes)
				var skipped []string
				progress := func(e Event) {
					if e.Kind == EventFileSkipped {
						skipped = append(skipped, e.Path)
					}
				}
				var err error
				if dir == "push" {
					h := newHarness(t, ServerConfig{}, Endpoint{Root: dst, Write: true})
					cl := h.client()
					cl.Links, cl.Progress = tc.links, progress
					_, err = cl.Send(context.Background(), []string{filepath.Join(src, "t")}, "")
				} else {
					h := newHarness(t, ServerConfig{}, Endpoint{Root: src, Read: true})
					cl := h.client()
					cl.Links = tc.links
					_, err = cl.Fetch(context.Background(), []string{"t"}, dst)
				}
				if err != nil {
					t.Fatal(err)
				}
				for _, n := range nodes {
					if n.link == "" {
						continue
					}
					got, err := os.Readlink(filepath.Join(dst, n.path))
					want, keep := tc.want[n.path]
					switch {
					case keep && got != want:
						t.Errorf("%s -> %q (%v), want -> %q", n.path, got, err, want)
					case !keep && err == nil:
						t.Errorf("%s -> %q was kept", n.path, got)
					}
				}
				if dir == "push" && len(skipped) != len(nodes)-3-len(tc.want) {
					t.Errorf("skipped events for %v", skipped)
				}
			})
		}
	}
}

func TestSpecialBitsDropped(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	makeTree(t, src, []node{
		{path: "d", dir: true, mode: 0o755 | fs.ModeSetgid | fs.ModeSticky},
		{path: "d/suid", data: []byte("#!/bin/sh\n"), mode: 0o755 | fs.ModeSetuid | fs.ModeSetgid},
	})
	if fi, _ := os.Stat(filepath.Join(src, "d", "suid")); fi.Mode()&fs.ModeSetuid == 0 {
		t.Skip("cannot set setuid here")
	}
	h := newHarness(t, ServerConfig{}, Endpoint{Write: true})
	if _, err := h.client().Send(context.Background(), []string{filepath.Join(src, "d")}, ""); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{"d": fs.ModeDir | 0o755, "d/suid": 0o755} {
		fi, err := os.Stat(filepath.Join(h.ep.Root, p))
		if err != nil || fi.Mode() != want {
			t.Errorf("%s: %v, want %v (%v)", p, fi.Mode(), want, err)
		}
	}
}

func TestPermissions(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	makeTree(t, src, []node{{path: "f", data: []byte("x")}})
	ctx := context.Background()

	h := newHarness(t, ServerConfig{}, Endpoint{Read: true})
	_, err := h.client().Send(ctx, []string{filepath.Join(src, "f")}, "")
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "alice may not write") {
		t.Errorf("send without write: %v", err)
	}
	h = newHarness(t, ServerConfig{}, Endpoint{Write: true})
	_, err = h.client().Fetch(ctx, []string{"f"}, t.TempDir())
	if !errors.Is(err, ErrPermission) {
		t.Errorf("fetch without read: %v", err)
	}
	if _, err = h.client().List(ctx, ""); !errors.Is(err, ErrPermission) {
		t.Errorf("list without read: %v", err)
	}
	h = newHarness(t, ServerConfig{}, Endpoint{Read: true})
	if _, err = h.client().Fetch(ctx, []string{"nope"}, t.TempDir()); !errors.Is(err, ErrNotFound) {
		t.Errorf("fetch of nothing: %v", err)
	}
	if _, err = h.client().Fetch(ctx, []string{"/"}, t.TempDir()); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("fetch of the root: %v", err)
	}

	// ServeFiles looks users up.
	srv := NewServer(ServerConfig{Lookup: func(user string) (Endpoint, error) {
		if user != "bob" {
			return Endpoint{}, errors.New("no files for " + user)
		}
		return Endpoint{Root: src, Read: true}, nil
	}})
	for user, want := range map[string]string{"bob": "", "eve": "no files for eve"} {
		f := newFakeServerFunc(t, func(ctx context.Context, rw streamRW) { srv.ServeFiles(ctx, user, rw) })
		cl := &Client{Open: f}
		entries, err := cl.List(ctx, "")
		if want == "" && (err != nil || len(entries) != 1) {
			t.Errorf("%s: %v %v", user, entries, err)
		}
		if want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v", user, err)
		}
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ServerConfig{}, Endpoint{Read: true})
	makeTree(t, h.ep.Root, []node{
		{path: "in", dir: true},
		{path: "in/a.txt", data: []byte("hello"), mode: 0o640},
		{path: "in/sub", dir: true, mode: 0o750},
		{path: "in/l", link: "a.txt"},
	})
	entries, err := h.client().List(context.Background(), "/in/")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Entry{}
	for _, e := range entries {
		got[e.Path] = e
	}
	if e := got["a.txt"]; e.Type != TypeFile || e.Size != 5 || e.Mode != 0o640 || !e.ModTime.Equal(baseTime.Add(time.Second)) {
		t.Errorf("a.txt: %+v", e)
	}
	if e := got["sub"]; e.Type != TypeDir || e.Mode != 0o750 {
		t.Errorf("sub: %+v", e)
	}
	if e := got["l"]; e.Type != TypeSymlink || e.Target != "a.txt" {
		t.Errorf("l: %+v", e)
	}
	if len(entries) != 3 {
		t.Errorf("%d entries", len(entries))
	}
	entries, err = h.client().List(context.Background(), "in/a.txt")
	if err != nil || len(entries) != 1 || entries[0].Path != "a.txt" {
		t.Errorf("file: %v %v", entries, err)
	}
	for _, bad := range []string{"../", "in/../..", "in/\x00"} {
		if _, err := h.client().List(context.Background(), bad); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("list %q: %v", bad, err)
		}
	}
	if _, err := h.client().List(context.Background(), "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("list missing: %v", err)
	}
}

func TestQuota(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	makeTree(t, src, []node{{path: "d", dir: true}, {path: "d/a", data: make([]byte, 600)}, {path: "d/b", data: make([]byte, 600)}})
	for _, tc := range []struct {
		name       string
		ep         Endpoint
		existing   []node
		wantErr    bool
		streamSize int
	}{
		{name: "bytes over", ep: Endpoint{MaxBytes: 1500}, existing: []node{{path: "old", data: make([]byte, 400)}}, wantErr: true},
		{name: "bytes fit", ep: Endpoint{MaxBytes: 1600}, existing: []node{{path: "old", data: make([]byte, 400)}}},
		{name: "files over", ep: Endpoint{MaxFiles: 4}, existing: []node{{path: "old", data: nil}, {path: "old2", data: nil}}, wantErr: true},
		{name: "files fit", ep: Endpoint{MaxFiles: 5}, existing: []node{{path: "old", data: nil}, {path: "old2", data: nil}}},
		{name: "stream over", ep: Endpoint{MaxBytes: 3 * MinChunkSize}, streamSize: 4 * MinChunkSize, wantErr: true},
		{name: "stream fits", ep: Endpoint{MaxBytes: 3 * MinChunkSize}, streamSize: 2 * MinChunkSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.ep.Write = true
			h := newHarness(t, ServerConfig{}, tc.ep)
			makeTree(t, h.ep.Root, tc.existing)
			before := snapshot(t, h.ep.Root)
			cl := h.client()
			cl.ChunkSize = MinChunkSize
			var err error
			if tc.streamSize > 0 {
				_, err = cl.SendStream(context.Background(), bytes.NewReader(make([]byte, tc.streamSize)), "s")
			} else {
				_, err = cl.Send(context.Background(), []string{filepath.Join(src, "d")}, "")
			}
			if !tc.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), "quota") {
				t.Fatalf("got %v", err)
			}
			t.Logf("refused: %v", err)
			if tc.streamSize == 0 {
				sameTree(t, before, snapshot(t, h.ep.Root)) // refused before any data
			}
			waitPartials(t, h.ep.Root, 0) // a stream's partial file cannot resume: removed
		})
	}
}

func TestFreeSpace(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	makeTree(t, src, []node{{path: "big", data: make([]byte, 3<<20)}})
	for _, tc := range []struct {
		name    string
		avail   int64
		reserve int64
		wantErr bool
	}{
		{name: "fits", avail: 100 << 20, reserve: 64 << 20},
		{name: "reserve would be eaten", avail: 66 << 20, reserve: 64 << 20, wantErr: true},
		{name: "disk full", avail: 1 << 20, reserve: 1, wantErr: true},
		{name: "no check", avail: 1 << 20, reserve: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			statfs := func(dir string) (int64, error) {
				calls.Add(1)
				return tc.avail, nil
			}
			h := newHarness(t, ServerConfig{Statfs: statfs}, Endpoint{Write: true, Reserve: tc.reserve})
			_, err := h.client().Send(context.Background(), []string{filepath.Join(src, "big")}, "")
			if tc.wantErr != (err != nil) || (err != nil && !errors.Is(err, ErrNoSpace)) {
				t.Fatalf("got %v", err)
			}
			if err != nil {
				t.Logf("refused: %v", err)
				if !strings.Contains(err.Error(), "free some space") {
					t.Errorf("no advice in %q", err)
				}
				if _, serr := os.Stat(filepath.Join(h.ep.Root, "big")); serr == nil || len(partials(t, h.ep.Root)) != 0 {
					t.Error("data written despite the refusal")
				}
			}
			if tc.reserve > 0 && calls.Load() == 0 {
				t.Error("statfs not consulted")
			}
		})
	}
	// The client checks its own disk on a fetch.
	h := newHarness(t, ServerConfig{}, Endpoint{Root: src, Read: true})
	cl := h.client()
	cl.Reserve = 1 << 20
	cl.Statfs = func(string) (int64, error) { return 2 << 20, nil }
	if _, err := cl.Fetch(context.Background(), []string{"big"}, t.TempDir()); !errors.Is(err, ErrNoSpace) {
		t.Errorf("fetch onto a full disk: %v", err)
	}
}

// fullDisk fails writes once the partial files hold limit bytes.
type fullDisk struct {
	partFile
	used  *atomic.Int64
	limit int64
}

func (f *fullDisk) WriteAt(p []byte, off int64) (int, error) {
	if f.used.Add(int64(len(p))) > f.limit {
		return 0, &fs.PathError{Op: "write", Path: "part", Err: syscall.ENOSPC}
	}
	return f.partFile.WriteAt(p, off)
}

func TestDiskFullDuringWrite(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	data := randBytes(5, 2<<20)
	makeTree(t, src, []node{{path: "big", data: data}})
	var used atomic.Int64
	cfg := ServerConfig{wrap: func(name string, f partFile) partFile {
		return &fullDisk{partFile: f, used: &used, limit: 1 << 20}
	}}
	h := newHarness(t, cfg, Endpoint{Write: true})
	cl := h.client()
	cl.ChunkSize = MinChunkSize
	_, err := cl.Send(context.Background(), []string{filepath.Join(src, "big")}, "")
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "resume") {
		t.Fatalf("got %v", err)
	}
	t.Logf("refused: %v", err)
	if _, err := os.Stat(filepath.Join(h.ep.Root, "big")); err == nil {
		t.Fatal("incomplete file under its final name")
	}
	waitPartials(t, h.ep.Root, 2)
	// Space is freed: the rerun resumes.
	used.Store(-1 << 40)
	st, err := cl.Send(context.Background(), []string{filepath.Join(src, "big")}, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(h.ep.Root, "big")); !bytes.Equal(got, data) || st.BytesResumed < 512<<10 {
		t.Errorf("resumed %d bytes; content ok: %v", st.BytesResumed, bytes.Equal(got, data))
	}
}

// TestServerKilled: the server goes away mid-transfer (its context ends,
// as when the process dies); a new server on the same root resumes.
func TestServerKilled(t *testing.T) {
	t.Parallel()
	src, root := t.TempDir(), t.TempDir()
	data := randBytes(9, 4<<20)
	makeTree(t, src, []node{{path: "big", data: data}})
	var h *harness
	var written atomic.Int64
	h = newHarness(t, ServerConfig{wrap: func(name string, f partFile) partFile {
		return &onWrite{partFile: f, fn: func(n int) {
			if written.Add(int64(n)) > 2<<20 {
				h.cancel() // the server dies
			}
		}}
	}}, Endpoint{Root: root, Write: true})
	h.useYamux()
	cl := h.client()
	cl.ChunkSize = MinChunkSize
	if _, err := cl.Send(context.Background(), []string{filepath.Join(src, "big")}, ""); err == nil {
		t.Fatal("send to a dead server succeeded")
	}
	if _, err := os.Stat(filepath.Join(root, "big")); err == nil {
		t.Fatal("final name exists")
	}
	h2 := newHarness(t, ServerConfig{}, Endpoint{Root: root, Write: true})
	cl = h2.client()
	cl.ChunkSize = MinChunkSize
	st, err := cl.Send(context.Background(), []string{filepath.Join(src, "big")}, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "big")); !bytes.Equal(got, data) || st.BytesResumed == 0 {
		t.Errorf("resumed %d; content ok %v", st.BytesResumed, bytes.Equal(got, data))
	}
}

// TestRecvAfterCancel: once its context, or the transfer it serves
// (endWith), has ended, a conn acts on no frame its stream still holds,
// even before the goroutine of context.AfterFunc has marked it cancelled.
// Otherwise a server whose context ends (TestServerKilled) could go on
// writing the chunks it had buffered and commit the file.
func TestRecvAfterCancel(t *testing.T) {
	t.Parallel()
	var frames bytes.Buffer
	w := newConn(context.Background(), writeOnly{&frames}, time.Second)
	if err := w.send(frameEnd, nil); err != nil {
		t.Fatal(err)
	}
	w.close()
	for _, transfer := range []bool{false, true} {
		for i := range 100 {
			ctx, cancel := context.WithCancel(context.Background())
			own := ctx
			if transfer {
				own = context.Background()
			}
			r := newConn(own, nopCloser{bytes.NewReader(frames.Bytes())}, time.Second)
			stop := func() bool { return false }
			if transfer {
				stop = r.endWith(ctx)
			}
			cancel()
			typ, _, err := r.recv()
			stop()
			r.close()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("try %d (transfer's context: %v): recv after cancel returned frame type %d, %v; want context.Canceled", i, transfer, typ, err)
			}
		}
	}
}

// writeOnly is a stream that only takes writes.
type writeOnly struct{ io.Writer }

func (writeOnly) Read([]byte) (int, error) { return 0, io.EOF }
func (writeOnly) Close() error             { return nil }

type onWrite struct {
	partFile
	fn func(int)
}

func (f *onWrite) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.partFile.WriteAt(p, off)
	f.fn(n)
	return n, err
}

func TestCancel(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	makeTree(t, src, []node{{path: "big", data: make([]byte, 8<<20)}})
	h := newHarness(t, ServerConfig{}, Endpoint{Write: true})
	ctx, cancel := context.WithCancel(context.Background())
	cl := h.client()
	cl.ChunkSize = MinChunkSize
	cl.Progress = func(e Event) {
		if e.Kind == EventProgress {
			cancel()
		}
	}
	start := time.Now()
	_, err := cl.Send(ctx, []string{filepath.Join(src, "big")}, "")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v to cancel", time.Since(start))
	}
}

// TestIdleTimeout: a peer that goes silent is dropped after the idle
// timeout, on a stream with deadlines (net.Pipe) and one without.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	for _, deadlines := range []bool{true, false} {
		t.Run(map[bool]string{true: "deadlines", false: "timer"}[deadlines], func(t *testing.T) {
			t.Parallel()
			srv := NewServer(ServerConfig{Limits: Limits{IdleTimeout: 200 * time.Millisecond}})
			a, b := netPipe(deadlines)
			done := make(chan error, 1)
			go func() { done <- srv.ServeStream(context.Background(), Endpoint{Root: t.TempDir(), Write: true}, b) }()
			// Say hello, then nothing.
			c := newConn(context.Background(), a, time.Second)
			defer c.close()
			c.send(frameHello, func(e *enc) { encodeHello(e, &hello{op: opPush, chunkSize: MinChunkSize, streams: 1}) })
			select {
			case err := <-done:
				if !errors.Is(err, ErrTimeout) {
					t.Errorf("got %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a silent client was not dropped")
			}
			b.Close()
		})
	}
}
