package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// A hostile peer is played with this package's own encoders, bypassing
// the honest client and server.

// rawChunk describes a chunk frame to send, lies included.
type rawChunk struct {
	file, index uint32
	data        []byte // what is sent (compressed when zstd)
	size        int    // declared size; len(data) when 0
	hash        *hash  // declared hash; the data's when nil
	zstd        bool
}

func sendRawChunk(c *conn, r rawChunk) error {
	h := chunkHeader{file: r.file, index: r.index, size: uint32(r.size)}
	if r.size == 0 {
		h.size = uint32(len(r.data))
	}
	if r.hash != nil {
		h.hash = *r.hash
	} else {
		h.hash = chunkHash(r.data)
	}
	if r.zstd {
		h.flags = chunkZstd
	}
	return c.sendChunk(&h, r.data)
}

func sendRawEnd(c *conn, file uint32, size int64, root hash) error {
	return c.send(frameFileEnd, func(e *enc) { encodeFileEnd(e, &fileEnd{file: file, size: uint64(size), root: root}) })
}

// rawPush plays a client: Hello, the entries, then data (if the plan is
// accepted) on one data stream, then Done. It returns the first error the
// server reports.
func rawPush(t *testing.T, h *harness, hl hello, entries []Entry, data func(c *conn) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hl.op = opPush
	if hl.chunkSize == 0 {
		hl.chunkSize = MinChunkSize
	}
	hl.streams = 1
	rw, err := h.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cc := newConn(ctx, rw, 10*time.Second)
	defer cc.close()
	if err := cc.send(frameHello, func(e *enc) { encodeHello(e, &hl) }); err != nil {
		return err
	}
	var pe planEnd
	err = cc.writeWhile(func() error {
		return writeManifest(cc, entries, &manifestEnd{count: uint64(len(entries))})
	}, func() (err error) {
		_, pe, err = readPlan(cc, nil)
		return err
	})
	if err != nil {
		return err
	}
	if data != nil {
		rw, err := h.open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dc := newConn(ctx, rw, 10*time.Second)
		defer dc.close()
		if err := dc.send(frameHello, func(e *enc) { encodeHello(e, &hello{op: opData, id: pe.id}) }); err != nil {
			return err
		}
		werr := make(chan error, 1)
		go func() {
			err := data(dc)
			if err == nil {
				err = dc.send(frameEnd, nil)
			}
			werr <- err
		}()
		var rerr error
		for {
			var typ byte
			if typ, _, rerr = dc.recv(); rerr != nil || typ == frameEnd {
				break
			}
		}
		if rerr != nil {
			dc.abort()
		}
		if err := <-werr; rerr == nil {
			rerr = err
		}
		if rerr != nil {
			return rerr
		}
	}
	if err := cc.send(frameDone, nil); err != nil {
		return cc.reason(err)
	}
	_, err = cc.expect(frameEnd)
	return err
}

func fileEntry(p string, size int64) Entry {
	return Entry{Path: p, Type: TypeFile, Size: size, Mode: 0o644, ModTime: baseTime}
}

func dirEntry(p string) Entry { return Entry{Path: p, Type: TypeDir, Mode: 0o755, ModTime: baseTime} }

func linkEntry(p, target string) Entry {
	return Entry{Path: p, Type: TypeSymlink, Target: target, Mode: 0o777, ModTime: baseTime}
}

// sendFile sends data as file idx, honestly, in one chunk per cs bytes.
func sendFile(c *conn, idx uint32, data []byte, cs int) error {
	var hashes []hash
	for i := 0; i*cs < len(data); i++ {
		d := data[i*cs : min(len(data), (i+1)*cs)]
		hashes = append(hashes, chunkHash(d))
		if err := sendRawChunk(c, rawChunk{file: idx, index: uint32(i), data: d}); err != nil {
			return err
		}
	}
	return sendRawEnd(c, idx, int64(len(data)), rootHash(int64(len(data)), cs, hashes))
}

// hostileSetup makes base/root (the user's root, with an inbox) and
// base/outside (with a file that must never change), and plants links.
func hostileSetup(t *testing.T) (base, root string) {
	base = t.TempDir()
	root = filepath.Join(base, "root")
	makeTree(t, base, []node{
		{path: "root", dir: true},
		{path: "root/inbox", dir: true},
		{path: "root/other", dir: true},
		{path: "outside", dir: true},
		{path: "outside/.ssh", dir: true},
		{path: "outside/.ssh/authorized_keys", data: []byte("ssh-ed25519 AAAA good\n")},
		// Planted in the destination: links out of the root and within it.
		{path: "root/inbox/.ssh", link: filepath.Join(base, "outside", ".ssh")},
		{path: "root/inbox/escape", link: "../../outside"},
		{path: "root/inbox/inner", link: "../other"},
		{path: "root/inbox/keys", link: filepath.Join(base, "outside", ".ssh", "authorized_keys")},
	})
	return base, root
}

func TestHostileSender(t *testing.T) {
	t.Parallel()
	cs := MinChunkSize
	payload := []byte("ssh-ed25519 AAAA evil\n")
	bomb := func() []byte {
		enc, _ := zstd.NewWriter(nil)
		defer enc.Close()
		return enc.EncodeAll(make([]byte, 64<<20), nil)
	}()
	for _, tc := range []struct {
		name    string
		hl      hello
		entries []Entry
		data    func(c *conn) error
		want    error  // errors.Is
		msg     string // in the message
	}{
		{name: "dotdot", entries: []Entry{fileEntry("../evil", 4)}, want: ErrUnsafePath, msg: `".." component`},
		{name: "absolute", entries: []Entry{fileEntry("/etc/evil", 4)}, want: ErrUnsafePath, msg: "absolute"},
		{name: "dotdot inside", entries: []Entry{dirEntry("a"), fileEntry("a/../../x", 4)}, want: ErrUnsafePath},
		{name: "dot", entries: []Entry{fileEntry("./x", 4)}, want: ErrUnsafePath},
		{name: "empty component", entries: []Entry{fileEntry("a//x", 4)}, want: ErrUnsafePath},
		{name: "NUL", entries: []Entry{fileEntry("a\x00b", 4)}, want: ErrUnsafePath, msg: "control character"},
		{name: "newline", entries: []Entry{fileEntry("a\nb", 4)}, want: ErrUnsafePath},
		{name: "escape sequence", entries: []Entry{fileEntry("a\x1b[2Jb", 4)}, want: ErrUnsafePath},
		{name: "backslash", entries: []Entry{fileEntry(`..\..\x`, 4)}, want: ErrUnsafePath},
		{name: "not UTF-8", entries: []Entry{fileEntry("a\xffb", 4)}, want: ErrUnsafePath},
		{name: "long component", entries: []Entry{fileEntry(strings.Repeat("x", 256), 4)}, want: ErrUnsafePath},
		{name: "device", entries: []Entry{{Path: "sda", Type: TypeOther, ModTime: baseTime}}, want: ErrUnsafePath, msg: "device"},
		{name: "unknown type", entries: []Entry{{Path: "fifo", Type: 9, ModTime: baseTime}}, want: ErrProtocol},
		{name: "duplicate", entries: []Entry{fileEntry("x", 1), fileEntry("x", 1)}, want: ErrUnsafePath, msg: "twice"},
		{name: "orphan", entries: []Entry{fileEntry("nodir/x", 1)}, want: ErrUnsafePath, msg: "parent"},
		{
			name:    "file under a planted link out of the root",
			hl:      hello{dest: "inbox", overwrite: OverwriteAlways},
			entries: []Entry{dirEntry(".ssh"), fileEntry(".ssh/authorized_keys", int64(len(payload)))},
			want:    ErrConflict, msg: "not a directory",
		},
		{
			name:    "file under a planted link within the root",
			hl:      hello{dest: "inbox", overwrite: OverwriteAlways},
			entries: []Entry{dirEntry("inner"), fileEntry("inner/x", 1)},
			want:    ErrConflict, msg: "not a directory",
		},
		{
			name:    "destination through a planted link",
			hl:      hello{dest: "inbox/.ssh"},
			entries: []Entry{fileEntry("authorized_keys", int64(len(payload)))},
			want:    ErrUnsafePath, msg: "outside the root",
		},
		{
			name:    "destination through a relative planted link",
			hl:      hello{dest: "inbox/escape/.ssh"},
			entries: []Entry{fileEntry("authorized_keys", int64(len(payload)))},
			want:    ErrUnsafePath,
		},
		{
			name:    "destination dotdot",
			hl:      hello{dest: "../outside"},
			entries: []Entry{fileEntry("x", 1)},
			want:    ErrUnsafePath,
		},
		{
			name:    "link out then file under it",
			hl:      hello{links: LinksKeep, dest: "inbox"},
			entries: []Entry{linkEntry("l", "../../outside/.ssh"), fileEntry("l/authorized_keys", int64(len(payload)))},
			want:    ErrUnsafePath,
		},
		{
			name:    "link out then file under it, links skipped",
			hl:      hello{dest: "inbox"},
			entries: []Entry{linkEntry("l", "/tmp"), fileEntry("l/x", 1)},
			want:    ErrUnsafePath, msg: "symlink, not a directory",
		},
		{
			name:    "absolute link kept",
			hl:      hello{links: LinksKeep, dest: "inbox"},
			entries: []Entry{linkEntry("l", "/etc/passwd")},
			want:    ErrUnsafePath, msg: "absolute",
		},
		{
			name:    "link chain out of the tree",
			hl:      hello{links: LinksKeep, dest: "inbox"},
			entries: []Entry{dirEntry("d"), linkEntry("d/up", ".."), linkEntry("d/c", "up/../..")},
			want:    ErrUnsafePath, msg: "clean",
		},
		{
			name:    "link through a link",
			hl:      hello{links: LinksKeep, dest: "inbox"},
			entries: []Entry{dirEntry("d"), linkEntry("d/up", ".."), linkEntry("d/c", "up/d")},
			want:    ErrUnsafePath, msg: "not a directory",
		},
		{
			name:    "link to nothing",
			hl:      hello{links: LinksKeep, dest: "inbox"},
			entries: []Entry{linkEntry("l", "missing")},
			want:    ErrUnsafePath, msg: "not part of the transfer",
		},
		{
			name:    "manifest count lie",
			entries: nil,
			want:    ErrProtocol,
		},
		{
			name:    "size lie: more data",
			entries: []Entry{fileEntry("f", 10)},
			data: func(c *conn) error {
				return sendRawChunk(c, rawChunk{data: make([]byte, 20)})
			},
			want: ErrIntegrity, msg: "expected 10",
		},
		{
			name:    "size lie: extra chunk",
			entries: []Entry{fileEntry("f", 10)},
			data: func(c *conn) error {
				return sendRawChunk(c, rawChunk{index: 1, data: make([]byte, 10)})
			},
			want: ErrIntegrity, msg: "more data than its declared size",
		},
		{
			name:    "size lie: less data",
			entries: []Entry{fileEntry("f", int64(cs)+10)},
			data: func(c *conn) error {
				d := make([]byte, cs)
				if err := sendRawChunk(c, rawChunk{data: d}); err != nil {
					return err
				}
				return sendRawEnd(c, 0, int64(cs)+10, rootHash(int64(cs)+10, cs, []hash{chunkHash(d)}))
			},
			want: ErrIncomplete, msg: "f",
		},
		{
			name:    "size lie in the end",
			entries: []Entry{fileEntry("f", 10)},
			data: func(c *conn) error {
				return sendRawEnd(c, 0, 5, hash{})
			},
			want: ErrIntegrity,
		},
		{
			name:    "chunk hash lie",
			entries: []Entry{fileEntry("f", 10)},
			data: func(c *conn) error {
				h := chunkHash([]byte("0123456789"))
				return sendRawChunk(c, rawChunk{data: []byte("evil evil!"), hash: &h})
			},
			want: ErrIntegrity, msg: "does not match its hash",
		},
		{
			name:    "whole-file hash lie",
			entries: []Entry{fileEntry("f", 10)},
			data: func(c *conn) error {
				if err := sendRawChunk(c, rawChunk{data: []byte("0123456789")}); err != nil {
					return err
				}
				return sendRawEnd(c, 0, 10, hash{1})
			},
			want: ErrIntegrity, msg: "whole-file hash",
		},
		{
			name:    "decompression bomb",
			entries: []Entry{fileEntry("f", int64(cs))},
			data: func(c *conn) error {
				return sendRawChunk(c, rawChunk{data: bomb, size: cs, zstd: true, hash: &hash{}})
			},
			want: ErrIntegrity, msg: "expand",
		},
		{
			name:    "decompression bomb, small window",
			entries: []Entry{fileEntry("f", int64(cs))},
			data: func(c *conn) error {
				enc, _ := zstd.NewWriter(nil, zstd.WithWindowSize(1<<16))
				defer enc.Close()
				return sendRawChunk(c, rawChunk{data: enc.EncodeAll(make([]byte, 64<<20), nil), size: cs, zstd: true, hash: &hash{}})
			},
			want: ErrIntegrity, msg: "expand",
		},
		{
			name:    "decompression bomb, no declared size",
			entries: []Entry{fileEntry("f", int64(cs))},
			data: func(c *conn) error {
				var b bytes.Buffer
				enc, _ := zstd.NewWriter(&b, zstd.WithWindowSize(1<<16))
				enc.Write(make([]byte, 64<<20))
				enc.Close()
				return sendRawChunk(c, rawChunk{data: b.Bytes(), size: cs, zstd: true, hash: &hash{}})
			},
			want: ErrIntegrity, msg: "expand",
		},
		{
			name:    "decompression short of its size",
			entries: []Entry{fileEntry("f", int64(cs))},
			data: func(c *conn) error {
				enc, _ := zstd.NewWriter(nil)
				defer enc.Close()
				return sendRawChunk(c, rawChunk{data: enc.EncodeAll(make([]byte, cs/2), nil), size: cs, zstd: true, hash: &hash{}})
			},
			want: ErrIntegrity, msg: "expands to",
		},
		{
			name:    "data for a directory",
			entries: []Entry{dirEntry("d")},
			data: func(c *conn) error {
				return sendRawChunk(c, rawChunk{data: []byte("x")})
			},
			want: ErrProtocol,
		},
		{
			name:    "chunk larger than the chunk size",
			entries: []Entry{fileEntry("f", 1<<20)},
			data: func(c *conn) error {
				return sendRawChunk(c, rawChunk{data: make([]byte, cs+1)})
			},
			want: ErrLimit,
		},
		{
			name:    "file too large for its chunks",
			entries: []Entry{fileEntry("f", int64(cs)*(maxChunksPerFile+1))},
			want:    ErrLimit,
		},
		{
			name: "chunk size too small",
			hl:   hello{chunkSize: 1024}, entries: []Entry{fileEntry("f", 1)},
			want: ErrLimit,
		},
		{
			name: "stream of several files",
			hl:   hello{flags: flagStream}, entries: []Entry{fileEntry("a", -1), fileEntry("b", -1)},
			want: ErrProtocol,
		},
		{
			name:    "unknown size outside a stream",
			entries: []Entry{fileEntry("a", -1)},
			want:    ErrLimit,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base, root := hostileSetup(t)
			h := newHarness(t, ServerConfig{}, Endpoint{Root: root, Read: true, Write: true})
			h.useYamux()
			before := snapshot(t, base)
			var err error
			if tc.name == "manifest count lie" {
				err = countLie(t, h)
			} else {
				err = rawPush(t, h, tc.hl, tc.entries, tc.data)
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v with %q", err, tc.want, tc.msg)
			}
			t.Logf("refused: %v", err)
			after := snapshot(t, base)
			for p, d := range after {
				if tc.data != nil && (p == "root" || strings.HasPrefix(p, "root/") && p != "root/f") {
					// The manifest was accepted: directories and partial
					// files may appear, but no file under its final name.
					continue
				}
				if before[p] != d {
					t.Errorf("%s changed or appeared: %q", p, d)
				}
			}
			// The server still serves others.
			checkStillServing(t, h)
		})
	}
}

// countLie sends a ManifestEnd whose count does not match.
func countLie(t *testing.T, h *harness) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rw, _ := h.open(ctx)
	cc := newConn(ctx, rw, 10*time.Second)
	defer cc.close()
	cc.send(frameHello, func(e *enc) {
		encodeHello(e, &hello{op: opPush, chunkSize: MinChunkSize, streams: 1})
	})
	writeManifest(cc, []Entry{fileEntry("a", 1)}, &manifestEnd{count: 5})
	_, _, err := readPlan(cc, nil)
	return err
}

func checkStillServing(t *testing.T, h *harness) {
	t.Helper()
	src := t.TempDir()
	makeTree(t, src, []node{{path: "honest.txt", data: []byte("still here")}})
	name := "ok-" + strings.ReplaceAll(t.Name(), "/", "-")
	cl := h.client()
	if _, err := cl.Send(context.Background(), []string{filepath.Join(src, "honest.txt")}, name); err != nil {
		t.Fatalf("honest send after the attack: %v", err)
	}
	var out bytes.Buffer
	if _, err := cl.FetchStream(context.Background(), name+"/honest.txt", &out); err != nil || out.String() != "still here" {
		t.Fatalf("honest fetch after the attack: %q, %v", out.String(), err)
	}
	// The server retires a transfer just after its last reply.
	for range 100 {
		h.srv.mu.Lock()
		n := len(h.srv.transfers) + len(h.srv.busy)
		h.srv.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("transfers or locks left registered")
}

// TestMillionEntries: a manifest over the entry limit is refused as soon
// as the limit is passed, not after a million entries were read.
func TestMillionEntries(t *testing.T) {
	t.Parallel()
	_, root := hostileSetup(t)
	h := newHarness(t, ServerConfig{}, Endpoint{Root: root, Write: true, Read: true})
	h.useYamux()
	entries := make([]Entry, 1_000_000)
	for i := range entries {
		entries[i] = fileEntry("f"+strings.Repeat("x", i%7)+itoa(i), 1)
	}
	start := time.Now()
	err := rawPush(t, h, hello{}, entries, nil)
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "100000 entries") {
		t.Fatalf("got %v", err)
	}
	t.Logf("refused in %v: %v", time.Since(start), err)
	if p := partials(t, root); len(p) != 0 {
		t.Errorf("wrote %v", p)
	}
	checkStillServing(t, h)
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		if i /= 10; i == 0 {
			return string(b[n:])
		}
	}
}

// TestPlantedLinkAtFinalName: a link planted where a file lands is
// replaced (never written through) when overwriting is allowed, and a
// conflict otherwise.
func TestPlantedLinkAtFinalName(t *testing.T) {
	t.Parallel()
	for _, ow := range []Overwrite{OverwriteNever, OverwriteAlways, OverwriteRename} {
		t.Run(ow.String(), func(t *testing.T) {
			t.Parallel()
			base, root := hostileSetup(t)
			h := newHarness(t, ServerConfig{}, Endpoint{Root: root, Write: true})
			payload := []byte("ssh-ed25519 AAAA evil\n")
			err := rawPush(t, h, hello{dest: "inbox", overwrite: ow},
				[]Entry{fileEntry("keys", int64(len(payload)))},
				func(c *conn) error { return sendFile(c, 0, payload, MinChunkSize) })
			keys, _ := os.ReadFile(filepath.Join(base, "outside", ".ssh", "authorized_keys"))
			if string(keys) != "ssh-ed25519 AAAA good\n" {
				t.Fatalf("wrote through the link: %q", keys)
			}
			if ow == OverwriteNever {
				if !errors.Is(err, ErrConflict) {
					t.Fatalf("got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			name := "keys"
			if ow == OverwriteRename {
				name = "keys (1)"
			}
			fi, err := os.Lstat(filepath.Join(root, "inbox", name))
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("%s: %v %v", name, fi, err)
			}
		})
	}
}

// fakeServer plays a hostile server for a Client: serve runs for every
// stream the client opens.
type fakeServer struct {
	t     *testing.T
	wg    sync.WaitGroup
	serve func(c *conn, h *hello)
}

func newFakeServer(t *testing.T, serve func(c *conn, h *hello)) *fakeServer {
	f := &fakeServer{t: t, serve: serve}
	t.Cleanup(f.wg.Wait)
	return f
}

func (f *fakeServer) open(ctx context.Context) (io.ReadWriteCloser, error) {
	a, b := net.Pipe()
	f.wg.Go(func() {
		defer b.Close()
		c := newConn(context.Background(), b, 5*time.Second)
		defer c.close()
		p, err := c.expect(frameHello)
		if err != nil {
			return
		}
		h, err := decodeHello(p, &Limits{MaxPathLen: 4096})
		if err != nil {
			return
		}
		c.maxChunk = int(max(h.chunkSize, MinChunkSize))
		f.serve(c, h)
	})
	return a, nil
}

// hostilePull serves a fetch with the given manifest; data answers each
// data stream's first Want.
func hostilePull(entries []Entry, data func(c *conn) error) func(c *conn, h *hello) {
	return func(c *conn, h *hello) {
		switch h.op {
		case opPull:
			err := c.writeWhile(func() error {
				return writeManifest(c, entries, &manifestEnd{count: uint64(len(entries)), streams: 1})
			}, func() error {
				_, _, err := readPlan(c, nil)
				return err
			})
			if err != nil {
				return
			}
			for {
				typ, _, err := c.recv()
				if err != nil {
					return
				}
				if typ == frameDone {
					c.send(frameEnd, nil)
					return
				}
			}
		case opData:
			if _, err := c.expect(frameWant); err != nil {
				return
			}
			if data(c) == nil {
				c.send(frameWantDone, nil)
				c.send(frameWantDone, nil)
				c.send(frameEnd, nil)
			}
			io.Copy(io.Discard, readerFunc(c.read))
		}
	}
}

// TestHostileServer: a server answering a fetch with names it chose, or
// with lies, cannot write outside the local directory nor commit bad
// data (scp CVE-2019-6111 and CVE-2020-12062, rsync CVE-2024-12087, croc
// CVE-2023-43621 in spirit).
func TestHostileServer(t *testing.T) {
	t.Parallel()
	cs := MinChunkSize
	for _, tc := range []struct {
		name    string
		entries []Entry
		data    func(c *conn) error
		want    error
		msg     string
	}{
		{name: "unrequested name", entries: []Entry{fileEntry(".bashrc", 4)}, want: ErrUnsafePath, msg: "not asked for"},
		{name: "unrequested under a requested one", entries: []Entry{fileEntry("want", 4), fileEntry("extra", 4)}, want: ErrUnsafePath, msg: "not asked for"},
		{name: "dotdot", entries: []Entry{dirEntry("want"), fileEntry("want/../../evil", 4)}, want: ErrUnsafePath},
		{name: "absolute", entries: []Entry{fileEntry("/tmp/evil", 4)}, want: ErrUnsafePath},
		{name: "device", entries: []Entry{{Path: "want", Type: TypeOther, ModTime: baseTime}}, want: ErrUnsafePath},
		{name: "planted local link", entries: []Entry{dirEntry("want"), dirEntry("want/.ssh"), fileEntry("want/.ssh/authorized_keys", 4)}, want: ErrConflict, msg: "not a directory"},
		{
			name:    "hash lie",
			entries: []Entry{fileEntry("want", 4)},
			data: func(c *conn) error {
				return sendRawChunk(c, rawChunk{data: []byte("evil"), hash: &hash{7}})
			},
			want: ErrIntegrity,
		},
		{
			name:    "size lie",
			entries: []Entry{fileEntry("want", 4)},
			data: func(c *conn) error {
				return sendRawChunk(c, rawChunk{data: []byte("evil evil")})
			},
			want: ErrIntegrity,
		},
		{
			name:    "decompression bomb",
			entries: []Entry{fileEntry("want", int64(cs))},
			data: func(c *conn) error {
				enc, _ := zstd.NewWriter(nil)
				defer enc.Close()
				return sendRawChunk(c, rawChunk{data: enc.EncodeAll(make([]byte, 32<<20), nil), size: cs, zstd: true})
			},
			want: ErrIntegrity,
		},
		{
			name:    "missing data",
			entries: []Entry{fileEntry("want", 4)},
			data:    func(c *conn) error { return nil },
			want:    ErrIncomplete,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base := t.TempDir()
			local := filepath.Join(base, "local")
			makeTree(t, base, []node{
				{path: "local", dir: true},
				{path: "outside", dir: true},
				{path: "outside/.ssh", dir: true},
				{path: "outside/.ssh/authorized_keys", data: []byte("good")},
				{path: "local/want", dir: true},
				{path: "local/want/.ssh", link: "../../outside/.ssh"},
			})
			if tc.name != "planted local link" {
				os.RemoveAll(filepath.Join(local, "want"))
			}
			before := snapshot(t, base)
			f := newFakeServer(t, hostilePull(tc.entries, tc.data))
			cl := &Client{Open: f.open, ChunkSize: cs, Reserve: -1, Limits: Limits{IdleTimeout: 5 * time.Second}}
			_, err := cl.Fetch(context.Background(), []string{"want"}, local)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v with %q", err, tc.want, tc.msg)
			}
			t.Logf("refused: %v", err)
			for p, d := range snapshot(t, base) {
				if strings.HasSuffix(p, ".part") {
					continue
				}
				if before[p] != d {
					t.Errorf("%s changed or appeared: %q", p, d)
				}
			}
		})
	}
}
