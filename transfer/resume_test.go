package transfer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	resumeSize  = 8 << 20
	resumeChunk = MinChunkSize
)

// TestResumePush cuts a send mid-file, checks that nothing sits under the
// final name, and reruns it: the rerun completes and resends under 10%.
func TestResumePush(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cut     int64 // bytes the client may write before the cut
		corrupt func(t *testing.T, part, journal string)
		minSent int64 // the rerun must send at least this much
	}{
		{name: "cut early", cut: 1 << 20},
		{name: "cut late", cut: 6 << 20},
		{name: "corrupt part", cut: 5 << 20, minSent: resumeChunk, corrupt: func(t *testing.T, part, _ string) {
			f, err := os.OpenFile(part, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// Chunk 1 was written and journaled; flip its bytes.
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xAA}, 100), resumeChunk+7); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "corrupt journal", cut: 5 << 20, minSent: resumeChunk, corrupt: func(t *testing.T, _, journal string) {
			b, err := os.ReadFile(journal)
			if err != nil {
				t.Fatal(err)
			}
			// The third record's hash: that record is ignored.
			b[journalHeaderLen+2*journalRecordLen+10] ^= 0xFF
			if err := os.WriteFile(journal, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "truncated journal", cut: 5 << 20, corrupt: func(t *testing.T, _, journal string) {
			fi, err := os.Stat(journal)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(journal, fi.Size()-5); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := t.TempDir()
			data := randBytes(42, resumeSize)
			makeTree(t, src, []node{{path: "big.bin", data: data, mode: 0o640}})
			h := newHarness(t, ServerConfig{}, Endpoint{Write: true})
			h.useYamux()
			h.wrapClient = cutAfter(tc.cut)
			cl := h.client()
			cl.ChunkSize = resumeChunk
			ctx := context.Background()

			st1, err := cl.Send(ctx, []string{filepath.Join(src, "big.bin")}, "in")
			if err == nil {
				t.Fatal("send through a cut connection succeeded")
			}
			final := filepath.Join(h.ep.Root, "in", "big.bin")
			if _, err := os.Lstat(final); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("final name exists after the cut: %v", err)
			}
			parts := waitPartials(t, h.ep.Root, 2)
			if tc.corrupt != nil {
				var part, journal string
				for _, p := range parts {
					if strings.HasSuffix(p, ".part") {
						part = p
					} else {
						journal = p
					}
				}
				tc.corrupt(t, part, journal)
			}

			h.wrapClient = nil
			st2, err := cl.Send(ctx, []string{filepath.Join(src, "big.bin")}, "in")
			if err != nil {
				t.Fatalf("rerun: %v (server: %v)", err, h.serverErrs())
			}
			got, err := os.ReadFile(final)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("after the rerun: %d bytes, %v", len(got), err)
			}
			resent := st1.BytesSent + st2.BytesSent - resumeSize
			t.Logf("first run sent %d, rerun sent %d, resumed %d: %d resent", st1.BytesSent, st2.BytesSent, st2.BytesResumed, resent)
			if resent > resumeSize/10 {
				t.Errorf("resent %d bytes, more than 10%% of %d", resent, resumeSize)
			}
			if st2.BytesSent < tc.minSent {
				t.Errorf("the rerun sent %d bytes; the corrupted chunk needs %d", st2.BytesSent, tc.minSent)
			}
			if st2.BytesResumed+st2.BytesSent != resumeSize {
				t.Errorf("rerun: %d resumed + %d sent != %d", st2.BytesResumed, st2.BytesSent, resumeSize)
			}
			if p := partials(t, h.ep.Root); len(p) != 0 {
				t.Errorf("partials left: %v", p)
			}
			fi, _ := os.Stat(final)
			if fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(baseTime) {
				t.Errorf("mode %v, mtime %v", fi.Mode(), fi.ModTime())
			}
		})
	}
}

// waitPartials waits for the server to wind down the interrupted
// transfer and returns the partial files, of which there must be n.
func waitPartials(t *testing.T, dir string, n int) []string {
	t.Helper()
	var p []string
	for range 100 {
		if p = partials(t, dir); len(p) == n {
			return p
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("partial files: %v, want %d", p, n)
	return nil
}

// TestResumePull cuts a fetch mid-file and reruns it.
func TestResumePull(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ServerConfig{}, Endpoint{Read: true})
	data := randBytes(7, resumeSize)
	makeTree(t, h.ep.Root, []node{{path: "d", dir: true}, {path: "d/big.bin", data: data}, {path: "d/small", data: []byte("x")}})
	dst := t.TempDir()
	cl := h.client()
	cl.ChunkSize = resumeChunk
	ctx := context.Background()

	// The client reads; cut the server's writes by cutting what the
	// client reads: close the client's end after some bytes arrive.
	cctx, cancel := context.WithCancel(ctx)
	var got int64
	cl.Progress = func(e Event) {
		if e.Kind == EventProgress {
			if got = e.Bytes; got > 4<<20 {
				cancel()
			}
		}
	}
	st1, err := cl.Fetch(cctx, []string{"d"}, dst)
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted fetch: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "d", "big.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("final name exists after the cut: %v", err)
	}
	if len(partials(t, dst)) != 2 {
		t.Fatalf("partials: %v", partials(t, dst))
	}
	cl.Progress = nil
	st2, err := cl.Fetch(ctx, []string{"d"}, dst)
	if err != nil {
		t.Fatalf("rerun: %v (server: %v)", err, h.serverErrs())
	}
	sameTree(t, snapshot(t, h.ep.Root), snapshot(t, dst))
	resent := st1.BytesSent + st2.BytesSent - resumeSize - 1
	t.Logf("first run %d, rerun %d, resumed %d", st1.BytesSent, st2.BytesSent, st2.BytesResumed)
	if resent > resumeSize/10 || st2.BytesResumed == 0 {
		t.Errorf("resent %d bytes, resumed %d", resent, st2.BytesResumed)
	}
	if p := partials(t, dst); len(p) != 0 {
		t.Errorf("partials left: %v", p)
	}
}

// TestSourceChangedBeforeRerun: the source changes between runs, so the
// partial file belongs to another version and is not reused.
func TestSourceChangedBeforeRerun(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	makeTree(t, src, []node{{path: "f", data: randBytes(1, 2<<20)}})
	h := newHarness(t, ServerConfig{}, Endpoint{Write: true})
	h.useYamux()
	h.wrapClient = cutAfter(1 << 20)
	cl := h.client()
	cl.ChunkSize = resumeChunk
	if _, err := cl.Send(context.Background(), []string{filepath.Join(src, "f")}, ""); err == nil {
		t.Fatal("cut send succeeded")
	}
	waitPartials(t, h.ep.Root, 2)
	data := randBytes(2, 2<<20)
	os.Remove(filepath.Join(src, "f"))
	makeTree(t, src, []node{{path: "f", data: data, modTime: baseTime.Add(time.Hour)}})
	h.wrapClient = nil
	st, err := cl.Send(context.Background(), []string{filepath.Join(src, "f")}, "")
	if err != nil {
		t.Fatal(err)
	}
	if st.BytesResumed != 0 || st.BytesSent != 2<<20 {
		t.Errorf("stats %+v", st)
	}
	if got, _ := os.ReadFile(filepath.Join(h.ep.Root, "f")); !bytes.Equal(got, data) {
		t.Error("wrong content")
	}
}
