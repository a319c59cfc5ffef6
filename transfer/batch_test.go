package transfer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Small files are committed in batches (one filesystem sync, then the
// renames); every one must still be acknowledged, counted and in place,
// over more than one batch and over several streams.
func TestSmallFilesBatched(t *testing.T) {
	const n = commitBatchFiles*2 + 17
	nodes := []node{{path: "d", dir: true}}
	for i := range n {
		nodes = append(nodes, node{path: fmt.Sprintf("d/f%04d", i), data: randBytes(uint64(i), 100+i)})
	}
	src := t.TempDir()
	makeTree(t, src, nodes)
	h := newHarness(t, ServerConfig{}, Endpoint{Write: true, Read: true})
	cl := h.client()
	done := 0
	cl.Progress = func(ev Event) {
		if ev.Kind == EventFileDone {
			done++
		}
	}
	st, err := cl.Send(context.Background(), []string{filepath.Join(src, "d")}, "in")
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != n || done != n {
		t.Fatalf("send: %d files committed, %d done events; want %d", st.Files, done, n)
	}
	back := t.TempDir()
	st, err = cl.Fetch(context.Background(), []string{"in/d"}, back)
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != n {
		t.Fatalf("fetch: %d files committed, want %d", st.Files, n)
	}
	for i := range n {
		name := fmt.Sprintf("d/f%04d", i)
		for _, dir := range []string{filepath.Join(h.ep.Root, "in"), back} {
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || string(got) != string(randBytes(uint64(i), 100+i)) {
				t.Fatalf("%s in %s: %v, content differs or missing", name, dir, err)
			}
		}
	}
	if parts, _ := filepath.Glob(filepath.Join(h.ep.Root, "in", "d", ".*.part")); len(parts) > 0 {
		t.Fatalf("partial files left: %v", parts)
	}
}
