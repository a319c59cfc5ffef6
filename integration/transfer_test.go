package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/burrowtun/burrow/mux"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/client"
	"github.com/burrowtun/burrow/integration/harness"
	"github.com/klauspost/compress/zstd"
)

// Tests of burrow send, fetch and ls against a real server: large files
// and big trees verified byte for byte with their modes and times,
// interruptions resumed, disk full, and transfers sharing a session with
// forwards.

// transferTimeout bounds one send or fetch of up to 2 GiB on loopback.
const transferTimeout = 5 * time.Minute

// fileServer is a server with --files-root and an admin listener.
type fileServer struct {
	*harness.Server
	files string // --files-root
	root  string // testUser's directory under it, where transfers land
	admin string
}

func startFileServer(t *testing.T, cert harness.CertPair, authfile, root string, args ...string) *fileServer {
	t.Helper()
	srv := burrow.StartServer(t, cert, authfile, append([]string{"--files-root", root, "--admin", "127.0.0.1:0"}, args...)...)
	return &fileServer{Server: srv, files: root, root: filepath.Join(root, harness.TestUser), admin: srv.AdminAddr(t)}
}

// newFileServer makes a certificate, a users file holding harness.TestUser and a
// files root, and starts a server on them.
func newFileServer(t *testing.T, args ...string) *fileServer {
	t.Helper()
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	return startFileServer(t, cert, authfile, t.TempDir(), args...)
}

// transferArgs are the connection flags of a send, fetch or ls to fs.
func (fs *fileServer) env() []string {
	return []string{"BURROW_AUTH=" + harness.TestUser + ":" + harness.TestPass, "BURROW_FINGERPRINT=" + fs.Cert.Fingerprint}
}

// startTransfer runs 'burrow CMD --json FLAGS... URL ARGS...' in the
// background.
func (fs *fileServer) startTransfer(t *testing.T, cmd string, flags []string, args ...string) *harness.Proc {
	t.Helper()
	full := append([]string{cmd, "--json"}, flags...)
	full = append(full, fs.URL)
	full = append(full, args...)
	return burrow.Start(t, cmd, "", fs.env(), full...)
}

// transferSummary is the last line of a --json transfer.
type transferSummary struct {
	Event        string `json:"event"`
	Files        int    `json:"files"`
	Skipped      int    `json:"skipped"`
	Bytes        int64  `json:"bytes"`
	BytesSent    int64  `json:"bytes_sent"`
	BytesResumed int64  `json:"bytes_resumed"`
}

// transfer runs a send or fetch to completion and returns its summary.
func (fs *fileServer) transfer(t *testing.T, cmd string, flags []string, args ...string) transferSummary {
	t.Helper()
	p := fs.startTransfer(t, cmd, flags, args...)
	start := time.Now()
	if code := p.WaitExit(t, transferTimeout); code != 0 {
		t.Fatalf("burrow %s %s: exit %d\n%s", cmd, strings.Join(args, " "), code, p.Stderr.String())
	}
	s := lastSummary(t, p)
	t.Logf("burrow %s: %d files, %s in %v (%s sent, %s resumed)", cmd, s.Files, mib(s.Bytes),
		time.Since(start).Round(time.Millisecond), mib(s.BytesSent), mib(s.BytesResumed))
	return s
}

func lastSummary(t *testing.T, p *harness.Proc) transferSummary {
	t.Helper()
	var s transferSummary
	for line := range strings.Lines(p.Stdout.String()) {
		var ev transferSummary
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Event == "summary" {
			s = ev
		}
	}
	if s.Event != "summary" {
		t.Fatalf("%s printed no JSON summary; stdout:\n%s", p.Name, p.Stdout.String())
	}
	return s
}

// failTransfer runs a send or fetch that must fail and returns its
// one-line explanation.
func (fs *fileServer) failTransfer(t *testing.T, cmd string, flags []string, args ...string) string {
	t.Helper()
	p := fs.startTransfer(t, cmd, flags, args...)
	if code := p.WaitExit(t, transferTimeout); code == 0 {
		t.Fatalf("burrow %s %s succeeded, want a failure", cmd, strings.Join(args, " "))
	}
	_, other := harness.StderrLines(p)
	if len(other) != 1 || !strings.HasPrefix(other[0], "burrow: ") {
		t.Fatalf("stderr has %d lines besides the log, want one \"burrow: ...\" line: %q", len(other), other)
	}
	return other[0]
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// randomStream is a reproducible stream of incompressible bytes: AES-CTR
// keyed by seed. It is here for speed: the cipher runs in assembly, so
// the race detector the suite runs under does not slow it, where a
// math/rand generator writing 2 GiB took seconds.
func randomStream(seed uint64) cipher.Stream {
	var key [16]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 16-byte key is always valid
	}
	return cipher.NewCTR(b, make([]byte, aes.BlockSize))
}

// writeRandomFile writes size pseudo-random bytes from seed to path.
func writeRandomFile(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	rng, buf := randomStream(seed), make([]byte, 1<<20)
	for left := size; left > 0; {
		piece := buf[:min(left, int64(len(buf)))]
		clear(piece)
		rng.XORKeyStream(piece, piece)
		if _, err := f.Write(piece); err != nil {
			t.Fatal(err)
		}
		left -= int64(len(piece))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// fileSHA256 hashes a file through a read-only mapping: the data never
// passes a read system call, whose buffer the race detector would scan
// byte by byte (most of the time of a 2 GiB comparison).
func fileSHA256(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() == 0 {
		return sha256.Sum256(nil)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(data)
	return sha256.Sum256(data)
}

// treeEntry is what a tree comparison checks of one path.
type treeEntry struct {
	mode  fs.FileMode
	mtime time.Time
	size  int64
	sum   [32]byte
}

// snapshotTree records every entry under dir: type and permission bits,
// modification time, and size and SHA-256 of files. Partial files of an
// unfinished transfer (".name.id.part" and their journals) are reported
// by name, since none may be left behind.
func snapshotTree(t *testing.T, dir string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := treeEntry{mode: fi.Mode(), mtime: fi.ModTime(), size: fi.Size()}
		if fi.Mode().IsRegular() {
			e.sum = fileSHA256(t, path)
		}
		if fi.IsDir() {
			e.size = 0
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// compareTrees reports every difference between want and got, with
// directory times compared only when checkDirTimes.
func compareTrees(t *testing.T, what string, want, got map[string]treeEntry) {
	t.Helper()
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad <= 10 {
			t.Errorf(what+": "+format, args...)
		}
	}
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			report("%s is missing", p)
		case g.mode != w.mode:
			report("%s has mode %v, want %v", p, g.mode, w.mode)
		case !g.mtime.Equal(w.mtime):
			report("%s has mtime %v, want %v", p, g.mtime, w.mtime)
		case g.size != w.size || g.sum != w.sum:
			report("%s differs in content (%d bytes, want %d)", p, g.size, w.size)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			report("%s is there but was not sent", p)
		}
	}
	if bad > 10 {
		t.Errorf("%s: %d differences in all", what, bad)
	}
}

// makeSmallTree writes n small files of 0-8 KiB in directories of 100,
// with assorted modes and modification times.
func makeSmallTree(t *testing.T, dir string, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	fill := randomStream(uint64(n))
	modes := []fs.FileMode{0o644, 0o600, 0o755, 0o640, 0o400}
	buf := make([]byte, 8<<10)
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	var dirs []string
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			dirs = append(dirs, sub)
		}
		size := rng.IntN(len(buf) + 1)
		clear(buf[:size])
		fill.XORKeyStream(buf[:size], buf[:size])
		p := filepath.Join(sub, fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, buf[:size], 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, modes[i%len(modes)])
		mt := base.Add(time.Duration(rng.Int64N(int64(365 * 24 * time.Hour))))
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range dirs {
		mt := base.Add(time.Duration(i) * time.Hour)
		os.Chtimes(d, mt, mt)
	}
}

// Must-show 1: a 2 GiB file and a tree of 10,000 small files go to the
// server and come back, every byte, mode and modification time intact.
func TestTransferLargeAndMany(t *testing.T) {
	fsrv := newFileServer(t)
	src := t.TempDir()

	big := filepath.Join(src, "big.bin")
	writeRandomFile(t, big, 2<<30, 1)
	os.Chmod(big, 0o640)
	bigTime := time.Date(2025, 1, 2, 3, 4, 5, 678901234, time.UTC)
	os.Chtimes(big, bigTime, bigTime)
	tree := filepath.Join(src, "tree")
	os.Mkdir(tree, 0o750)
	makeSmallTree(t, tree, 10000)
	treeTime := time.Date(2024, 12, 24, 18, 0, 0, 0, time.UTC)
	os.Chtimes(tree, treeTime, treeTime)
	want := snapshotTree(t, src)

	sent := fsrv.transfer(t, "send", []string{"--to", "inbox"}, big, tree)
	if sent.Files != 10001 {
		t.Errorf("send committed %d files, want 10001", sent.Files)
	}
	compareTrees(t, "on the server", want, snapshotTree(t, filepath.Join(fsrv.root, "inbox")))

	back := t.TempDir()
	got := fsrv.transfer(t, "fetch", []string{"--to", back}, "inbox/big.bin", "inbox/tree")
	if got.Files != 10001 {
		t.Errorf("fetch committed %d files, want 10001", got.Files)
	}
	compareTrees(t, "fetched back", want, snapshotTree(t, back))

	// Everything is there already: a second send moves no data.
	again := fsrv.transfer(t, "send", []string{"--to", "inbox"}, big, tree)
	if again.BytesSent != 0 || again.Files != 0 {
		t.Errorf("repeated send moved %d files, %d bytes; want everything skipped as identical", again.Files, again.BytesSent)
	}
}

// progressMax is the most bytes a --json transfer reported through.
func progressMax(p *harness.Proc) int64 {
	var done int64
	for line := range strings.Lines(p.Stdout.String()) {
		var ev struct{ Bytes int64 }
		if json.Unmarshal([]byte(line), &ev) == nil {
			done = max(done, ev.Bytes)
		}
	}
	return done
}

// progressAt waits until a --json transfer reports at least n bytes
// through, and returns how many it reported.
func progressAt(t *testing.T, p *harness.Proc, n int64, timeout time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if done := progressMax(p); done >= n {
			return done
		}
		if p.Exited() {
			t.Fatalf("%s exited before %s went through:\n%s", p.Name, mib(n), p.Stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not get %s through within %v", p.Name, mib(n), timeout)
	return 0
}

var partFile = regexp.MustCompile(`^\..+\.part$`)

// partials lists the partial files under dir.
func partials(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && partFile.MatchString(d.Name()) {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// fileBytesIn is what clients sent the server on file streams, by its
// own count, once no file stream is open any more.
func fileBytesIn(t *testing.T, admin string) float64 {
	t.Helper()
	deadline := time.Now().Add(harness.IOTimeout)
	for {
		m := scrapeMetrics(t, admin)
		if m.value("burrow_streams_open", "kind", "file") == 0 || time.Now().After(deadline) {
			return m.value("burrow_bytes_total", "direction", "in", "kind", "file")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Must-show 2: a 1 GiB transfer cut at about half way, by killing the
// server and, separately, the client, completes when the same command is
// run again, resending under 10% of the file; nothing ever appears under
// its final name unfinished.
func TestTransferInterrupted(t *testing.T) {
	const size = 1 << 30
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	root := t.TempDir()
	src := t.TempDir()
	file := filepath.Join(src, "disk.img")
	writeRandomFile(t, file, size, 2)
	sum := fileSHA256(t, file)
	final := filepath.Join(root, harness.TestUser, "inbox", "disk.img")

	// resent is the data that crossed twice: what the interrupted run got
	// through plus what the rerun sent, beyond the file's size.
	checkResumed := func(t *testing.T, s transferSummary, first, second float64) {
		t.Helper()
		resent := first + second - size
		t.Logf("first run %s, rerun %s (%s verified in place): %s sent twice", mib(int64(first)), mib(int64(second)),
			mib(s.BytesResumed), mib(int64(resent)))
		if resent >= 0.10*size {
			t.Errorf("%s of the %s file was sent twice, want under 10%%", mib(int64(resent)), mib(size))
		}
		if float64(s.BytesResumed) < 0.4*size {
			t.Errorf("the rerun resumed only %s of a file interrupted half way", mib(s.BytesResumed))
		}
	}

	t.Run("server killed", func(t *testing.T) {
		fsrv := startFileServer(t, cert, authfile, root)
		p := fsrv.startTransfer(t, "send", []string{"--to", "inbox"}, file)
		at := progressAt(t, p, size/2, transferTimeout)
		fsrv.Kill(t)
		t.Logf("server killed with SIGKILL at %s", mib(at))
		if code := p.WaitExit(t, harness.IOTimeout); code == 0 {
			t.Fatal("send succeeded although the server was killed half way")
		}
		if !strings.Contains(p.Stderr.String(), "run the same command again") {
			t.Errorf("the failed send does not say how to resume:\n%s", p.Stderr.String())
		}
		if _, err := os.Stat(final); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s exists after the interruption (%v): an unfinished file under its final name", final, err)
		}
		if len(partials(t, root)) != 1 {
			t.Fatalf("partial files after the interruption: %q, want one", partials(t, root))
		}
		first := float64(progressMax(p))
		again := startFileServer(t, cert, authfile, root)
		s := again.transfer(t, "send", []string{"--to", "inbox"}, file)
		checkResumed(t, s, first, fileBytesIn(t, again.admin))
		if fileSHA256(t, final) != sum {
			t.Fatal("the resumed file differs from the source")
		}
		if ps := partials(t, root); len(ps) != 0 {
			t.Errorf("partial files left after completion: %q", ps)
		}
	})

	t.Run("client killed", func(t *testing.T) {
		os.Remove(final)
		fsrv := startFileServer(t, cert, authfile, root)
		p := fsrv.startTransfer(t, "send", []string{"--to", "inbox"}, file)
		at := progressAt(t, p, size/2, transferTimeout)
		p.Kill(t)
		t.Logf("client killed with SIGKILL at %s", mib(at))
		before := fileBytesIn(t, fsrv.admin)
		if _, err := os.Stat(final); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s exists after the interruption (%v)", final, err)
		}
		s := fsrv.transfer(t, "send", []string{"--to", "inbox"}, file)
		checkResumed(t, s, before, fileBytesIn(t, fsrv.admin)-before)
		if fileSHA256(t, final) != sum {
			t.Fatal("the resumed file differs from the source")
		}
	})

	t.Run("fetch, client killed", func(t *testing.T) {
		fsrv := startFileServer(t, cert, authfile, root)
		dst := t.TempDir()
		p := fsrv.startTransfer(t, "fetch", []string{"--to", dst}, "inbox/disk.img")
		at := progressAt(t, p, size/2, transferTimeout)
		p.Kill(t)
		t.Logf("fetching client killed with SIGKILL at %s", mib(at))
		local := filepath.Join(dst, "disk.img")
		if _, err := os.Stat(local); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s exists after the interruption (%v)", local, err)
		}
		if len(partials(t, dst)) != 1 {
			t.Fatalf("local partial files after the interruption: %q, want one", partials(t, dst))
		}
		first := float64(progressMax(p))
		s := fsrv.transfer(t, "fetch", []string{"--to", dst}, "inbox/disk.img")
		checkResumed(t, s, first, float64(s.BytesSent))
		if fileSHA256(t, local) != sum {
			t.Fatal("the resumed fetch differs from the source")
		}
	})
}

// Must-show 4: a transfer and forwarded TCP traffic at the same time over
// one session: the file rides a running client's session through its
// control socket while the client forwards an echo service.
func TestTransferSharesSession(t *testing.T) {
	fsrv := newFileServer(t)
	echo := harness.StartEcho(t)
	control := filepath.Join(t.TempDir(), "control.sock")
	_, locals := burrow.StartClient(t, fsrv.URL, harness.TestUser+":"+harness.TestPass,
		[]string{"--fingerprint", fsrv.Cert.Fingerprint, "--control", control}, "127.0.0.1:0:"+echo)

	src := filepath.Join(t.TempDir(), "payload")
	writeRandomFile(t, src, 256<<20, 3)
	send := burrow.Start(t, "send", "", nil, "send", "--json", "--control", control, "--to", "shared", src)

	// Forwarded traffic while the file moves.
	const rounds = 200
	msg := make([]byte, 256<<10)
	for i := range rounds {
		rand.NewChaCha8([32]byte{byte(i)}).Read(msg)
		harness.EchoRoundTrip(t, locals[0], msg)
		if i == rounds/2 {
			m := scrapeMetrics(t, fsrv.admin)
			if n := m.value("burrow_sessions"); n != 1 {
				t.Errorf("burrow_sessions = %v during the transfer, want 1", n)
			}
		}
	}
	if code := send.WaitExit(t, transferTimeout); code != 0 {
		t.Fatalf("send through the control socket: exit %d\n%s", code, send.Stderr.String())
	}
	if fileSHA256(t, filepath.Join(fsrv.root, "shared", "payload")) != fileSHA256(t, src) {
		t.Fatal("the file sent over the shared session differs")
	}
	m := scrapeMetrics(t, fsrv.admin)
	if total := m.value("burrow_sessions_total"); total != 1 {
		t.Errorf("burrow_sessions_total = %v, want 1: the transfer opened a session of its own", total)
	}
	if n := m.value("burrow_streams_total", "kind", "file", "result", "ok"); n < 2 {
		t.Errorf("file streams served: %v, want the transfer's control and data streams", n)
	}
	if n := m.value("burrow_streams_total", "kind", "tcp", "result", "ok"); n < 1 {
		t.Errorf("tcp streams served: %v, want the forward's", n)
	}
	if n := m.value("burrow_transfers_total", "op", "send", "result", "ok"); n != 1 {
		t.Errorf("burrow_transfers_total{op=send,result=ok} = %v, want 1", n)
	}
	if n := m.value("burrow_transfer_bytes_total", "op", "send"); n != 256<<20 {
		t.Errorf("burrow_transfer_bytes_total{op=send} = %v, want the file's %d bytes", n, 256<<20)
	}
	fsrv.WaitLog(t, regexp.MustCompile(`msg="transfer finished" user=`+harness.TestUser+` op=send files=1 bytes=268435456 `), harness.IOTimeout)
}

// Users of one server do not see each other's files: each has a
// directory of its own under --files-root.
func TestTransferUsersApart(t *testing.T) {
	fsrv := newFileServer(t)
	burrow.NewUser(t, fsrv.Authfile, "bob", "bob-password")
	fsrv.Signal(t, syscall.SIGHUP)
	fsrv.WaitLog(t, regexp.MustCompile(`msg="users reloaded" users=2`), harness.StartTimeout)
	src := filepath.Join(t.TempDir(), "secret.txt")
	os.WriteFile(src, []byte("alice's\n"), 0o600)
	fsrv.transfer(t, "send", []string{"--to", "inbox"}, src)

	bob := []string{"BURROW_AUTH=bob:bob-password", "BURROW_FINGERPRINT=" + fsrv.Cert.Fingerprint}
	for _, path := range []string{"inbox/secret.txt", "../alice/inbox/secret.txt", "/alice/inbox/secret.txt"} {
		_, msg := runFailing(t, bob, "fetch", "--to", t.TempDir(), fsrv.URL, path)
		t.Logf("bob fetching %s: %s", path, msg)
		if !strings.Contains(msg, "not found") && !strings.Contains(msg, "refusing") {
			t.Errorf("bob fetching %s: %q, want not found or refused", path, msg)
		}
	}
	p := burrow.Start(t, "ls", "", bob, "ls", fsrv.URL)
	if code := p.WaitExit(t, harness.ExitTimeout); code != 0 || strings.Contains(p.Stdout.String(), "inbox") {
		t.Errorf("bob's listing (exit %d) shows alice's files: %q", code, p.Stdout.String())
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory, or skips
// the test when this system does not let the test mount one.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (needs root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// Must-show 5: the server's disk fills up during a send: a clear error,
// the partial file kept, nothing under the final name; once space is
// freed the same command completes the file, verified.
func TestTransferDiskFull(t *testing.T) {
	root := mountTmpfs(t, 256<<20)
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	fsrv := startFileServer(t, cert, authfile, root)

	src := filepath.Join(t.TempDir(), "backup.tar")
	writeRandomFile(t, src, 160<<20, 4)
	// --parallel 1 and the first chunks through before the disk fills, so
	// that the failure comes mid-file.
	p := fsrv.startTransfer(t, "send", []string{"--to", "inbox", "--parallel", "1"}, src)
	progressAt(t, p, 16<<20, transferTimeout)
	filler := filepath.Join(root, "filler")
	fill, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	// Whatever the filesystem has left goes to the filler, a block short.
	chunk := make([]byte, 1<<20)
	for {
		if _, err := fill.Write(chunk); err != nil {
			break
		}
	}
	fill.Close()
	if code := p.WaitExit(t, harness.IOTimeout); code == 0 {
		t.Fatal("send succeeded although the disk was full")
	}
	_, other := harness.StderrLines(p)
	if len(other) != 1 || !strings.Contains(other[0], "free space") && !strings.Contains(other[0], "no space") {
		t.Fatalf("want one line saying the disk is full, got %q", other)
	}
	t.Logf("disk full: %s", other[0])
	final := filepath.Join(root, harness.TestUser, "inbox", "backup.tar")
	if _, err := os.Stat(final); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s exists after the disk filled up (%v)", final, err)
	}
	parts := partials(t, root)
	if len(parts) != 1 {
		t.Fatalf("partial files after the disk filled up: %q, want one kept for resuming", parts)
	}
	if fi, err := os.Stat(parts[0]); err != nil || fi.Size() < 16<<20 {
		t.Fatalf("partial file %s: %v, %v; want what was written kept", parts[0], fi, err)
	}

	os.Remove(filler)
	t.Logf("free space after removing the filler: %s", mib(freeBytes(t, root)))
	s := fsrv.transfer(t, "send", []string{"--to", "inbox", "--parallel", "1"}, src)
	if s.BytesResumed < 16<<20 {
		t.Errorf("the rerun resumed %s; want the chunks written before the disk filled", mib(s.BytesResumed))
	}
	if fileSHA256(t, final) != fileSHA256(t, src) {
		t.Fatal("the file completed after the disk-full error differs from the source")
	}
}

// Must-show 3, against the real server: a client that speaks the file
// protocol by hand (docs/transfer.md) and sends hostile manifests is
// refused with a reason, nothing lands outside the files root, and the
// server keeps serving.
func TestTransferHostileSender(t *testing.T) {
	fsrv := newFileServer(t)
	outside := filepath.Dir(fsrv.files)
	sess := dialFileSession(t, fsrv)

	cases := []struct {
		name    string
		dest    string
		links   byte // 1: keep
		entries [][]byte
		count   uint64 // declared in ManifestEnd; 0 means len(entries)
		want    string
	}{
		{name: "dotdot", dest: "inbox", entries: [][]byte{fileEntry("../../evil", 4)}, want: `".."`},
		{name: "absolute", dest: "inbox", entries: [][]byte{fileEntry("/tmp/evil", 4)}, want: "absolute"},
		{name: "authorized_keys outside the root", dest: "../.ssh", entries: [][]byte{fileEntry("authorized_keys", 4)}, want: `".."`},
		{name: "file under a link", dest: "inbox", links: 1, entries: [][]byte{linkEntry("l", "/root/.ssh"), fileEntry("l/authorized_keys", 4)}, want: "refusing"},
		{name: "NUL in a name", dest: "inbox", entries: [][]byte{fileEntry("a\x00b", 4)}, want: "control character"},
		{name: "device", dest: "inbox", entries: [][]byte{entry("sda", 4, 0, 0, "")}, want: "refusing"},
		{name: "million entries", dest: "inbox", entries: nil, count: 1_000_000, want: "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := hostilePush(t, sess, tc.dest, tc.links, tc.entries, tc.count)
			t.Logf("refused: %s", msg)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("refusal %q does not name the problem (%q)", msg, tc.want)
			}
		})
	}
	for _, dir := range []string{outside, fsrv.files} {
		for _, name := range []string{"evil", "tmp/evil", ".ssh", "authorized_keys"} {
			if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
				t.Errorf("%s was written outside the user's files directory", filepath.Join(dir, name))
			}
		}
	}
	if _, err := os.Stat("/tmp/evil"); err == nil {
		t.Error("/tmp/evil was written")
	}
	// The million entries hit a limit, which the server counts.
	if n := scrapeMetrics(t, fsrv.admin).value("burrow_limit_hits_total", "limit", "transfer_size"); n < 1 {
		t.Errorf("burrow_limit_hits_total{limit=transfer_size} = %v after a manifest over the entries limit", n)
	}
	// The server is still up and serves an honest client.
	src := filepath.Join(t.TempDir(), "honest")
	os.WriteFile(src, []byte("still serving\n"), 0o644)
	fsrv.transfer(t, "send", []string{"--to", "inbox"}, src)
	if b, err := os.ReadFile(filepath.Join(fsrv.root, "inbox", "honest")); err != nil || string(b) != "still serving\n" {
		t.Fatalf("honest send after the attacks: %q, %v", b, err)
	}
}

// TestTransferHostileChunks is a malicious sender past an honest
// manifest: chunks that lie about their hash, size or place, a FileEnd
// that lies about the file, and a zstd bomb, each sent on a data stream
// to the real server. Each is refused with an error naming the problem,
// nothing appears under the file's final name, and the server goes on
// serving.
func TestTransferHostileChunks(t *testing.T) {
	fsrv := newFileServer(t)
	sess := dialFileSession(t, fsrv)
	good := []byte("good data\n")
	sum := func(b []byte) []byte { h := sha256.Sum256(b); return h[:] }
	// 64 MiB of zeros in a few KiB, declared as 1 MiB. Written as a
	// stream, so that the frame does not state its size and the
	// receiver must find out by decoding.
	var bombBuf bytes.Buffer
	zenc, err := zstd.NewWriter(&bombBuf, zstd.WithWindowSize(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	for range 64 {
		zenc.Write(make([]byte, 1<<20))
	}
	if err := zenc.Close(); err != nil {
		t.Fatal(err)
	}
	bomb := bombBuf.Bytes()
	zeros := make([]byte, 1<<20)
	n := uint64(len(good))
	cases := []struct {
		name   string
		size   uint64   // the file's size in the manifest
		frames [][]byte // on the data stream, after its Hello
		want   string
	}{
		{name: "hash lie", size: n, frames: [][]byte{chunkFrame(0, 0, 0, n, make([]byte, 32), good)}, want: `chunk 0 of "f" does not match its hash`},
		{name: "size lie", size: 4, frames: [][]byte{chunkFrame(0, 0, 0, n, sum(good), good)}, want: "is 10 bytes, expected 4"},
		{name: "data longer than its size", size: n, frames: [][]byte{chunkFrame(0, 0, 0, n, sum(good), append(good, good...))}, want: `chunk 0 of "f" carries 20 bytes but declares 10`},
		{name: "chunk past the end", size: n, frames: [][]byte{chunkFrame(0, 1, 0, n, sum(good), good)}, want: "which has 1 chunks"},
		{name: "file past the manifest", size: n, frames: [][]byte{chunkFrame(3, 0, 0, n, sum(good), good)}, want: "entry 3"},
		{name: "whole-file hash lie", size: n, frames: [][]byte{chunkFrame(0, 0, 0, n, sum(good), good), fileEndFrame(0, n, make([]byte, 32))}, want: "whole-file hash"},
		{name: "decompression bomb", size: uint64(len(zeros)), frames: [][]byte{chunkFrame(0, 0, 1, uint64(len(zeros)), sum(zeros), bomb)}, want: "does not expand to its declared"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dest := fmt.Sprintf("hostile%d", i)
			msg := hostileChunks(t, sess, dest, tc.size, tc.frames)
			t.Logf("refused: %s", msg)
			if !strings.Contains(strings.ToLower(msg), tc.want) {
				t.Errorf("refusal %q does not name the problem (%q)", msg, tc.want)
			}
			// Only partial files (hidden, .part and .journal) may remain.
			filepath.WalkDir(filepath.Join(fsrv.root, dest), func(path string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
					t.Errorf("%s is under a final name after a refused transfer", path)
				}
				return nil
			})
		})
	}
	// Nothing landed beside the user's directory.
	entries, err := os.ReadDir(fsrv.files)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != harness.TestUser {
			t.Errorf("%s appeared in the files root, outside the user's directory", e.Name())
		}
	}
	// The server is still up and serves an honest client.
	src := filepath.Join(t.TempDir(), "honest")
	os.WriteFile(src, good, 0o644)
	fsrv.transfer(t, "send", []string{"--to", "inbox"}, src)
	if b, err := os.ReadFile(filepath.Join(fsrv.root, "inbox", "honest")); err != nil || !bytes.Equal(b, good) {
		t.Fatalf("honest send after the attacks: %q, %v", b, err)
	}
}

// hostileChunks pushes one file of size into dest with an honest
// manifest, then sends frames on a data stream of the transfer and
// returns the message of the Error the server answers with.
func hostileChunks(t *testing.T, sess *client.Session, dest string, size uint64, frames [][]byte) string {
	t.Helper()
	ctl := openFileStream(t, sess)
	defer ctl.Close()
	var manifest []byte
	manifest = append(manifest, frame(frameHello, pushHello(dest, 0))...)
	manifest = append(manifest, frame(frameEntries, fileEntry("f", int64(size)))...)
	manifest = append(manifest, frame(frameManifestEnd, append(append(be(1, 8), make([]byte, 16)...), be(1, 2)...))...)
	if _, err := ctl.Write(manifest); err != nil {
		t.Fatal(err)
	}
	cr := bufio.NewReader(ctl)
	var id []byte
	for id == nil {
		switch typ, payload := readFrame(t, cr, "an honest manifest"); typ {
		case framePlan, frameKeepalive:
		case framePlanEnd:
			if len(payload) != 18 {
				t.Fatalf("PlanEnd of %d bytes", len(payload))
			}
			id = payload[:16]
		case frameError:
			t.Fatalf("the server refused an honest manifest: %x", payload)
		default:
			t.Fatalf("the server answered a manifest with frame type %d", typ)
		}
	}
	data := openFileStream(t, sess)
	defer data.Close()
	hello := append([]byte("BRWT"), 1, 4)
	out := frame(frameHello, append(hello, id...))
	for _, f := range frames {
		out = append(out, f...)
	}
	// Written in the background: the server may refuse before reading all.
	go data.Write(out)
	return readErrorFrame(t, bufio.NewReader(data), "hostile chunks")
}

// chunkFrame is a Chunk frame: file (4) | chunk (4) | flags (1) |
// size (4) | hash (32) | data.
func chunkFrame(file, chunk uint64, flags byte, size uint64, hash, data []byte) []byte {
	b := append(be(file, 4), be(chunk, 4)...)
	b = append(b, flags)
	b = append(b, be(size, 4)...)
	b = append(b, hash...)
	return frame(frameChunk, append(b, data...))
}

// fileEndFrame is a FileEnd frame: file (4) | size (8) | whole-file hash (32).
func fileEndFrame(file, size uint64, root []byte) []byte {
	return frame(frameFileEnd, append(append(be(file, 4), be(size, 8)...), root...))
}

// dialFileSession opens a session to fsrv with the library, for streams
// the burrow binary would never send.
func dialFileSession(t *testing.T, fsrv *fileServer) *client.Session {
	t.Helper()
	tlsConfig, err := certs.ClientConfig(certs.ClientOptions{Fingerprint: fsrv.Cert.Fingerprint})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), harness.StartTimeout)
	defer cancel()
	sess, err := client.Connect(ctx, client.Config{URL: fsrv.URL, Username: harness.TestUser, Password: harness.TestPass, TLS: tlsConfig})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

// The hand-made protocol of TestTransferHostileSender, from
// docs/transfer.md: frames of type (1), length (4) and payload.
const (
	frameHello       = 1
	frameEntries     = 2
	frameManifestEnd = 3
	framePlan        = 4
	framePlanEnd     = 5
	frameChunk       = 6
	frameFileEnd     = 7
	frameError       = 13
	frameKeepalive   = 14
)

func frame(typ byte, payload []byte) []byte {
	return append([]byte{typ, byte(len(payload) >> 24), byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload))}, payload...)
}

func wireString(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func be(n uint64, width int) []byte {
	b := make([]byte, width)
	for i := range width {
		b[width-1-i] = byte(n >> (8 * i))
	}
	return b
}

func entry(path string, typ byte, mode uint32, size int64, target string) []byte {
	b := wireString(path)
	b = append(b, typ)
	b = append(b, be(uint64(mode), 4)...)
	b = append(b, be(uint64(size), 8)...)
	b = append(b, be(uint64(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()), 8)...)
	return append(b, wireString(target)...)
}

func fileEntry(path string, size int64) []byte { return entry(path, 1, 0o644, size, "") }
func linkEntry(path, target string) []byte     { return entry(path, 3, 0o777, 0, target) }
func pushHello(dest string, links byte) []byte {
	b := []byte("BRWT")
	b = append(b, 1, 2)            // version, push
	b = append(b, 0, 0, links)     // flags, overwrite never, links
	b = append(b, be(4<<20, 4)...) // chunk size
	b = append(b, be(1, 2)...)     // streams
	return append(b, wireString(dest)...)
}

// openFileStream opens a file-transfer stream on sess whose reads and
// writes fail after twice the I/O timeout.
func openFileStream(t *testing.T, sess *client.Session) *mux.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*harness.IOTimeout)
	defer cancel()
	st, err := sess.OpenFile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(2 * harness.IOTimeout))
	return st
}

// hostilePush opens a file stream, sends a push with entries (or count
// distinct files, sent in batches, when entries is nil) and returns the
// message of the Error the server answers with.
func hostilePush(t *testing.T, sess *client.Session, dest string, links byte, entries [][]byte, count uint64) string {
	t.Helper()
	st := openFileStream(t, sess)
	defer st.Close()
	// Write in the background: the server may refuse before reading all.
	go func() {
		w := bufio.NewWriterSize(st, 256<<10)
		w.Write(frame(frameHello, pushHello(dest, links)))
		n := count
		if entries != nil {
			var batch []byte
			for _, e := range entries {
				batch = append(batch, e...)
			}
			w.Write(frame(frameEntries, batch))
			n = uint64(len(entries))
		} else {
			var batch []byte
			for i := range count {
				batch = append(batch, fileEntry(fmt.Sprintf("f%07d", i), 0)...)
				if len(batch) > 200<<10 {
					if _, err := w.Write(frame(frameEntries, batch)); err != nil {
						return
					}
					batch = batch[:0]
				}
			}
			w.Write(frame(frameEntries, batch))
		}
		end := append(be(n, 8), make([]byte, 16)...)
		w.Write(frame(frameManifestEnd, append(end, be(1, 2)...)))
		w.Flush()
	}()
	return readErrorFrame(t, bufio.NewReader(st), "a hostile manifest")
}

// readFrame reads one frame of the transfer protocol.
// what names what the frame was awaited for, for a stream that ends first.
func readFrame(t *testing.T, r *bufio.Reader, what string) (byte, []byte) {
	t.Helper()
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatalf("the server closed the stream without answering %s: %v", what, err)
	}
	n := int(hdr[1])<<24 | int(hdr[2])<<16 | int(hdr[3])<<8 | int(hdr[4])
	if n > 1<<20 {
		t.Fatalf("the server sent a frame of %d bytes", n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		t.Fatal(err)
	}
	return hdr[0], payload
}

// readErrorFrame reads frames until an Error and returns its message;
// any other frame but a keepalive fails the test.
func readErrorFrame(t *testing.T, r *bufio.Reader, what string) string {
	t.Helper()
	for {
		typ, payload := readFrame(t, r, what)
		switch typ {
		case frameKeepalive:
			continue
		case frameError:
			if len(payload) < 3 {
				t.Fatalf("short error frame %x", payload)
			}
			l := int(payload[1])<<8 | int(payload[2])
			return string(bytes.ToValidUTF8(payload[3:3+min(l, len(payload)-3)], nil))
		default:
			t.Fatalf("the server answered %s with frame type %d, want an error", what, typ)
		}
	}
}
