package transfer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// The server reports each transfer once, with the files and file data
// it moved, and a failed one with its error.
func TestServerReport(t *testing.T) {
	var (
		mu      sync.Mutex
		reports []Report
	)
	cfg := ServerConfig{Report: func(r Report) {
		mu.Lock()
		reports = append(reports, r)
		mu.Unlock()
	}}
	h := newHarness(t, cfg, Endpoint{User: "alice", Read: true, Write: true})
	nodes := []node{{path: "d", dir: true}}
	var total int64
	for i := range 5 {
		data := randBytes(uint64(i), 1000*(i+1))
		total += int64(len(data))
		nodes = append(nodes, node{path: fmt.Sprintf("d/f%d", i), data: data})
	}
	src := t.TempDir()
	makeTree(t, src, nodes)
	cl := h.client()
	if _, err := cl.Send(context.Background(), []string{filepath.Join(src, "d")}, "in"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Fetch(context.Background(), []string{"in/d"}, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Fetch(context.Background(), []string{"in/missing"}, t.TempDir()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch of a missing path: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 3 {
		t.Fatalf("%d reports, want 3: %+v", len(reports), reports)
	}
	for i, want := range []Report{
		{User: "alice", Op: "send", Files: 5, Bytes: total},
		{User: "alice", Op: "fetch", Files: 5, Bytes: total},
		{User: "alice", Op: "fetch"},
	} {
		got := reports[i]
		if got.User != want.User || got.Op != want.Op || got.Files != want.Files || got.Bytes != want.Bytes {
			t.Errorf("report %d: %+v, want %+v", i, got, want)
		}
		if (got.Err != nil) != (i == 2) {
			t.Errorf("report %d error: %v", i, got.Err)
		}
	}
}
