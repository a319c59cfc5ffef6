package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness serves a Server over an in-memory transport for one test.
type harness struct {
	t      testing.TB
	srv    *Server
	ep     Endpoint
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	errs []error // what ServeStream returned

	// wrapClient and wrapServer, if set, wrap the client's and the
	// server's end of each stream.
	wrapClient, wrapServer func(io.ReadWriteCloser) io.ReadWriteCloser
	transport              string // "pipe" (default) or "yamux"
	sess                   [2]*yamux.Session
}

func newHarness(t testing.TB, cfg ServerConfig, ep Endpoint) *harness {
	t.Helper()
	if ep.Root == "" {
		ep.Root = t.TempDir()
	}
	if ep.User == "" {
		ep.User = "alice"
	}
	if ep.Reserve == 0 {
		ep.Reserve = -1
	}
	h := &harness{t: t, srv: NewServer(cfg), ep: ep}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		h.cancel()
		for _, s := range h.sess {
			if s != nil {
				s.Close()
			}
		}
		h.wg.Wait()
	})
	return h
}

// useYamux carries the streams over one yamux session on a net.Pipe, as
// Burrow does over its WebSocket.
func (h *harness) useYamux() {
	cl, srv := yamuxSessions(h.t, 4<<20)
	h.sess = [2]*yamux.Session{cl, srv}
	h.transport = "yamux"
	h.wg.Go(func() {
		for {
			st, err := srv.AcceptStream()
			if err != nil {
				return
			}
			h.wg.Go(func() { h.serve(st) })
		}
	})
}

// yamuxSessions returns a yamux client and server session over a pipe,
// with streams of up to window bytes (yamux's default for 0).
func yamuxSessions(t testing.TB, window uint32) (cl, srv *yamux.Session) {
	t.Helper()
	a, b := net.Pipe()
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	if window > 0 {
		cfg.MaxStreamWindowSize = window
	}
	srv, err := yamux.Server(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl, err = yamux.Client(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cl, srv
}

func (h *harness) serve(rw io.ReadWriteCloser) {
	if h.wrapServer != nil {
		rw = h.wrapServer(rw)
	}
	err := h.srv.ServeStream(h.ctx, h.ep, rw)
	rw.Close()
	if err != nil {
		h.mu.Lock()
		h.errs = append(h.errs, err)
		h.mu.Unlock()
	}
}

func (h *harness) open(ctx context.Context) (io.ReadWriteCloser, error) {
	var cl io.ReadWriteCloser
	if h.transport == "yamux" {
		st, err := h.sess[0].OpenStream()
		if err != nil {
			return nil, err
		}
		cl = st
	} else {
		a, b := net.Pipe()
		h.wg.Go(func() { h.serve(b) })
		cl = a
	}
	if h.wrapClient != nil {
		cl = h.wrapClient(cl)
	}
	return cl, nil
}

func (h *harness) client() *Client {
	return &Client{Open: h.open, Reserve: -1, Limits: Limits{IdleTimeout: 20 * time.Second}}
}

func (h *harness) serverErrs() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.errs...)
}

// A tree spec: path -> content for files ("/" suffix for directories,
// "-> target" for links).
type node struct {
	path    string
	data    []byte
	dir     bool
	link    string
	mode    fs.FileMode
	modTime time.Time
}

var baseTime = time.Date(2024, 3, 14, 15, 9, 26, 535897932, time.UTC)

// makeTree writes nodes under dir, giving each its mode and time
// (directories after their contents).
func makeTree(t testing.TB, dir string, nodes []node) {
	t.Helper()
	for _, n := range nodes {
		p := filepath.Join(dir, filepath.FromSlash(n.path))
		var err error
		switch {
		case n.dir:
			err = os.MkdirAll(p, 0o755)
		case n.link != "":
			err = os.Symlink(n.link, p)
		default:
			err = os.WriteFile(p, n.data, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		if n.link != "" {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(n.path))
		if n.mode != 0 {
			if err := os.Chmod(p, n.mode); err != nil {
				t.Fatal(err)
			}
		}
		mt := n.modTime
		if mt.IsZero() {
			mt = baseTime.Add(time.Duration(i) * time.Second)
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// snapshot describes a tree for comparison: path -> type, mode, size,
// mtime and content hash.
func snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %v", fi.Mode(), fi.ModTime().UTC().Format(time.RFC3339Nano))
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %d %x", len(b), sha256.Sum256(b))
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, _ := os.Readlink(p)
			desc = "link -> " + tgt
		}
		out[filepath.ToSlash(rel)] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t testing.TB, want, got map[string]string) {
	t.Helper()
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	bad := 0
	for _, k := range keys {
		if want[k] != got[k] {
			if bad++; bad <= 10 {
				t.Errorf("%s:\n  want %q\n  got  %q", k, want[k], got[k])
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d differences in all", bad)
	}
}

// sub returns the entries of a snapshot under prefix/, re-rooted.
func sub(s map[string]string, prefix string) map[string]string {
	out := make(map[string]string)
	for k, v := range s {
		if k == prefix {
			continue
		}
		if r, ok := strings.CutPrefix(k, prefix+"/"); ok {
			out[r] = v
		}
	}
	return out
}

// noPartials fails if any partial file or journal is left under dir.
func partials(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && (strings.HasSuffix(p, ".part") || strings.HasSuffix(p, ".journal")) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// failAfter is a stream that breaks after n bytes were written through
// it, as a dropped connection would.
type failAfter struct {
	io.ReadWriteCloser
	mu   *sync.Mutex
	left *int64
}

var errCut = errors.New("connection cut")

func (f *failAfter) Write(p []byte) (int, error) {
	f.mu.Lock()
	if *f.left <= 0 {
		f.mu.Unlock()
		f.ReadWriteCloser.Close()
		return 0, errCut
	}
	n := int64(len(p))
	cut := n > *f.left
	if cut {
		n = *f.left
	}
	*f.left -= n
	f.mu.Unlock()
	w, err := f.ReadWriteCloser.Write(p[:n])
	if err == nil && cut {
		f.ReadWriteCloser.Close()
		return w, errCut
	}
	return w, err
}

// cutAfter makes every stream of h share a budget of n written bytes.
func cutAfter(n int64) func(io.ReadWriteCloser) io.ReadWriteCloser {
	var mu sync.Mutex
	left := n
	return func(rw io.ReadWriteCloser) io.ReadWriteCloser {
		return &failAfter{ReadWriteCloser: rw, mu: &mu, left: &left}
	}
}

var _ = bytes.Equal

type streamRW = io.ReadWriteCloser

// newFakeServerFunc returns an Open that serves each stream with serve,
// in a goroutine the test waits for.
func newFakeServerFunc(t *testing.T, serve func(ctx context.Context, rw streamRW)) func(context.Context) (io.ReadWriteCloser, error) {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	return func(ctx context.Context) (io.ReadWriteCloser, error) {
		a, b := net.Pipe()
		wg.Go(func() {
			defer b.Close()
			serve(context.Background(), b)
		})
		return a, nil
	}
}

// noDeadlines hides a stream's deadline methods.
type noDeadlines struct{ io.ReadWriteCloser }

// netPipe returns a connected pair, with deadline support or without.
func netPipe(deadlines bool) (io.ReadWriteCloser, io.ReadWriteCloser) {
	a, b := net.Pipe()
	if deadlines {
		return a, b
	}
	return noDeadlines{a}, noDeadlines{b}
}
