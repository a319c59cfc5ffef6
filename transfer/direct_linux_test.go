package transfer

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// isDirect reports whether f, a partial file the receiver opened, has
// O_DIRECT set.
func isDirect(t *testing.T, f partFile) bool {
	fl, err := unix.FcntlInt(f.(*os.File).Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Error(err)
	}
	return fl&unix.O_DIRECT != 0
}

// needDirect skips the test where dir's filesystem has no direct I/O.
func needDirect(t *testing.T, dir string) {
	f, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if useDirect(f, MinChunkSize) == 0 {
		t.Skipf("no direct I/O in %s", dir)
	}
}

// directWrites counts the writes to partial files made with O_DIRECT
// set, and can refuse them as a filesystem without direct I/O would.
type directWrites struct {
	partFile
	t              *testing.T
	direct, refuse *atomic.Int64
}

func (f *directWrites) WriteAt(p []byte, off int64) (int, error) {
	if isDirect(f.t, f.partFile) {
		if f.refuse != nil {
			f.refuse.Add(1)
			return 0, &fs.PathError{Op: "write", Path: "part", Err: syscall.EINVAL}
		}
		f.direct.Add(1)
	}
	return f.partFile.WriteAt(p, off)
}

// TestDirectWrites: files over the batch size are written with direct
// I/O, the last chunk padded to the alignment and cut back at commit;
// small files go through the page cache; a filesystem that refuses
// direct I/O at the first write gets the page cache instead.
func TestDirectWrites(t *testing.T) {
	t.Parallel()
	sizes := []int{commitBatchFileMax + 1, 3<<20 + 12345, 4 << 20, 100 << 10}
	for _, refuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "refused"}[refuse], func(t *testing.T) {
			t.Parallel()
			src := t.TempDir()
			var nodes []node
			for i, n := range sizes {
				nodes = append(nodes, node{path: "f" + string(rune('a'+i)), data: randBytes(uint64(40+i), n)})
			}
			makeTree(t, src, nodes)
			var direct, refused atomic.Int64
			h := newHarness(t, ServerConfig{wrap: func(name string, f partFile) partFile {
				w := &directWrites{partFile: f, t: t, direct: &direct}
				if refuse {
					w.refuse = &refused
				}
				return w
			}}, Endpoint{Write: true})
			needDirect(t, h.ep.Root)
			cl := h.client()
			cl.ChunkSize = MinChunkSize
			if _, err := cl.Send(context.Background(), []string{src}, ""); err != nil {
				t.Fatal(err)
			}
			for _, nd := range nodes {
				got, err := os.ReadFile(filepath.Join(h.ep.Root, filepath.Base(src), nd.path))
				if err != nil || !bytes.Equal(got, nd.data) {
					t.Errorf("%s: %d bytes, want %d (%v)", nd.path, len(got), len(nd.data), err)
				}
			}
			// Chunks of the three large files; the small one has none.
			wantDirect := int64(0)
			for _, n := range sizes[:3] {
				wantDirect += chunkCount(int64(n), MinChunkSize)
			}
			switch {
			case !refuse && direct.Load() != wantDirect:
				t.Errorf("%d writes with direct I/O, want %d", direct.Load(), wantDirect)
			case refuse && (direct.Load() != 0 || refused.Load() != 3):
				t.Errorf("%d writes with direct I/O and %d refused, want 0 and 3 (one per large file)", direct.Load(), refused.Load())
			}
			if p := partials(t, h.ep.Root); len(p) > 0 {
				t.Errorf("partial files left: %v", p)
			}
		})
	}
}

// TestDirectUnaligned: a chunk that is not in an aligned buffer, or has
// no room for its padding, is copied to one that is.
func TestDirectUnaligned(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	needDirect(t, dir)
	pf, err := os.Create(filepath.Join(dir, "part"))
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	f := &rfile{f: pf, dio: pf, align: useDirect(pf, MinChunkSize)}
	data := randBytes(3, 3*dioAlign+100)
	buf := alignedBuf(len(data) + 1)
	copy(buf[1:], data)
	for i, b := range [][]byte{buf[1:], data[:len(data):len(data)]} {
		if isAligned(b, dioAlign) && cap(b) >= roundUp(len(b), dioAlign) {
			t.Fatalf("case %d is aligned", i)
		}
		if err := f.writeChunk(b, int64(i)*MinChunkSize); err != nil {
			t.Fatal(err)
		}
	}
	if f.dio == nil || !isDirect(t, pf) {
		t.Error("direct I/O was turned off")
	}
	got, err := os.ReadFile(pf.Name())
	if err != nil {
		t.Fatal(err)
	}
	if want := MinChunkSize + roundUp(len(data), f.align); len(got) != want {
		t.Fatalf("%d bytes, want %d: %d padded to %d", len(got), want, MinChunkSize+len(data), f.align)
	}
	for i := range 2 {
		if c := got[i*MinChunkSize:][:len(data)]; !bytes.Equal(c, data) {
			t.Errorf("chunk %d reads back wrong", i)
		}
	}
	if pad := got[MinChunkSize+len(data):]; !bytes.Equal(pad, make([]byte, len(pad))) {
		t.Error("the padding is not zeros")
	}
}
