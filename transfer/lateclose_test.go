package transfer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A chunk that arrives after the receiver closed (a data stream still
// draining when its transfer failed) must not reopen the partial file:
// reopening a file with nothing verified truncates it, and the resume
// that follows would find nothing to keep.
func TestNoWriteAfterClose(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	cs := MinChunkSize
	data := randBytes(1, 2*cs)
	r := newReceiver(recvConfig{root: root, chunkSize: cs, limits: Limits{}.withDefaults(), reserve: -1})
	r.entries = []Entry{{Path: "f", Type: TypeFile, Size: int64(2 * cs), Mode: 0o644, ModTime: time.Unix(1_700_000_000, 0)}}
	if _, err := r.plan(context.Background()); err != nil {
		t.Fatal(err)
	}
	write := func(i int) error {
		h := chunkHeader{file: 0, index: uint32(i), size: uint32(cs), hash: chunkHash(data[i*cs : (i+1)*cs])}
		if _, err := r.expect(&h); err != nil {
			return err
		}
		_, _, err := r.write(&h, data[i*cs:(i+1)*cs], cs)
		return err
	}
	if err := write(0); err != nil {
		t.Fatal(err)
	}
	r.close()
	if err := write(1); err == nil {
		t.Fatal("a chunk was written after the receiver closed")
	}
	parts, _ := filepath.Glob(filepath.Join(dir, ".f.*.part"))
	if len(parts) != 1 {
		t.Fatalf("partial files: %v, want one", parts)
	}
	got, err := os.ReadFile(parts[0])
	if err != nil || !bytes.Equal(got[:min(len(got), cs)], data[:cs]) || len(got) < cs {
		t.Fatalf("the partial file lost its verified chunk (%d bytes, %v)", len(got), err)
	}
}
