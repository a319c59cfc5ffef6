package transfer

import (
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestSpaceBook: two transfers that each fit in the free space alone are
// not both accepted when together they would eat into the reserve, also
// when they plan at the same instant; what a transfer has written stops
// counting as promised (the free space then shows it), and its end frees
// the rest.
func TestSpaceBook(t *testing.T) {
	t.Parallel()
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var book spaceBook
	var written atomic.Int64 // by every receiver, as the disk sees it
	const free, reserve = 150, 10
	statfs := func(string) (int64, error) { return free - written.Load(), nil }
	newRecv := func() *receiver {
		return &receiver{cfg: recvConfig{root: root, reserve: reserve, statfs: statfs, space: &book}}
	}

	r1, r2 := newRecv(), newRecv()
	if err := r1.checkSpace(80); err != nil {
		t.Fatalf("the first transfer: %v", err)
	}
	err = r2.checkSpace(80)
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "80 B of it promised to other transfers in progress") {
		t.Fatalf("the second transfer beside the first: %v, want ErrNoSpace naming what the first may still write", err)
	}
	r1.dataBytes.Add(30)
	written.Add(30)
	if err := r2.checkSpace(80); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("with the first 30 B in: %v, want ErrNoSpace (80 + 10 + 50 > 120)", err)
	}
	if err := r2.checkSpace(60); err != nil {
		t.Fatalf("60 B with the first 30 B in: %v (60 + 10 + 50 <= 120)", err)
	}
	book.release(&r1.spaceH)
	book.release(&r2.spaceH)
	if err := newRecv().checkSpace(110); err != nil {
		t.Fatalf("once both ended: %v", err)
	}

	// Sixteen planning at the same instant, 100 B free, 40 B each.
	var book2 spaceBook
	var accepted atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			r := &receiver{cfg: recvConfig{root: root, statfs: func(string) (int64, error) { return 100, nil }, space: &book2}}
			if r.checkSpace(40) == nil {
				accepted.Add(1)
			}
		})
	}
	wg.Wait()
	if n := accepted.Load(); n != 2 {
		t.Errorf("%d transfers of 40 B accepted at once with 100 B free, want 2", n)
	}
}

// TestSpaceBookFilesystems: what transfers to one filesystem may still
// write does not count against a transfer to another; filesystemOf tells
// them apart.
func TestSpaceBookFilesystems(t *testing.T) {
	t.Parallel()
	var book spaceBook
	var w1, w2, w3 atomic.Int64
	h1, h2, h3 := &spaceHold{written: &w1}, &spaceHold{written: &w2}, &spaceHold{written: &w3}
	heldFor := func(h *spaceHold, fs uint64) int64 {
		var got int64
		if err := book.reserve(h, fs, 80, func(held int64) error { got = held; return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := heldFor(h1, 1); got != 0 {
		t.Errorf("the first transfer sees %d B held, want 0", got)
	}
	if got := heldFor(h2, 2); got != 0 {
		t.Errorf("a transfer to another filesystem sees %d B held, want 0", got)
	}
	if got := heldFor(h3, 1); got != 80 {
		t.Errorf("a transfer to the first one's filesystem sees %d B held, want its 80", got)
	}

	open := func(dir string) *os.Root {
		r, err := os.OpenRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := open(t.TempDir()), open(t.TempDir())
	if fa, fb := filesystemOf(a), filesystemOf(b); fa != fb {
		t.Errorf("two directories of one filesystem: %d and %d", fa, fb)
	}
	if _, err := os.Stat("/proc/self"); err == nil {
		// procfs is not a filesystem of its own free space: the pool
		// everything unknown shares.
		if f := filesystemOf(open("/proc")); f != 0 {
			t.Errorf("/proc has key %d, want 0 (shared)", f)
		}
	}
	if shm, err := os.OpenRoot("/dev/shm"); err == nil {
		defer shm.Close()
		fa, fs := filesystemOf(a), filesystemOf(shm)
		if fa != 0 && fs != 0 && fa == fs {
			t.Errorf("%s and /dev/shm (tmpfs) reported as one pool (%d)", a.Name(), fa)
		}
	}
}
