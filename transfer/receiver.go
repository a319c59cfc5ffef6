package transfer

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// partFile is what the receiver needs of a partial file; tests wrap it to
// inject failures.
type partFile interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Chmod(mode fs.FileMode) error
	Close() error
}

// recvConfig is what a receiver applies; the server fills it from an
// Endpoint and a request, the client from its own settings.
type recvConfig struct {
	root      *os.Root // every filesystem operation goes through it
	dest      string   // destination directory, relative to root ("" for root)
	overwrite Overwrite
	links     LinkPolicy
	chunkSize int
	stream    bool // one file of unknown size, written in order, no resume
	limits    Limits

	reserve    int64                                     // free space to leave
	statfs     func(dir string) (avail int64, err error) // nil: no check
	quotaBytes int64                                     // 0: no quota
	quotaFiles int64
	// book, when set, holds what the other transfers in progress under
	// the same root may still add, so that together they keep to the
	// quota.
	book *quotaBook
	// space, when set, holds what the other transfers in progress to
	// the same server may still write, so that together they keep the
	// reserve free.
	space *spaceBook

	// lock reserves destination paths against other transfers.
	lock func(paths []string) (unlock func(), err error)
	// wrap, for tests, wraps every partial file opened for writing.
	wrap func(name string, f partFile) partFile
	// track, on the client, turns progress into Events.
	track *tracker
}

// File states.
const (
	fileWanted = iota // needs data (or a hash comparison)
	fileDone          // committed or skipped after the comparison
	fileFailed        // gave up; the partial file stays for a resume
)

type rfile struct {
	mu      sync.Mutex
	idx     int
	e       *Entry
	final   string // destination, relative to root
	part    string
	journal string
	nchunks int64 // -1 in stream mode
	known   map[uint32]hash
	hashes  []hash
	got     []bool
	ngot    int64
	f       partFile
	dio     *os.File // f, when it takes direct I/O
	align   int      // with direct I/O: what writes are padded to
	j       *os.File
	jbuf    []byte
	root    *hash // from FileEnd
	check   *hash // the existing file's hash, for planCheck
	exists  bool  // the destination existed when planned
	state   int
	err     error // why it failed
	written int64 // stream mode: bytes so far
	short   bool  // stream mode: a short chunk was seen, it must be the last
	resumed int64
	started bool // reported to the tracker
}

// receiver writes one incoming transfer under a root.
type receiver struct {
	cfg     recvConfig
	entries []Entry
	files   []*rfile // by entry index; nil for entries that need no data

	mu       sync.Mutex
	open     int             // partial files open
	ended    bool            // closed: no partial file may be opened again
	dirty    map[string]bool // directories whose entries changed, to fsync
	unlock   func()
	quotaUse int64     // bytes in use under the root, when a quota applies
	hold     quotaHold // what this transfer may add, in cfg.book
	spaceH   spaceHold // what this transfer may still write, in cfg.space

	// For the server's report: file data written, and files committed.
	dataBytes, committed atomic.Int64

	pmu          sync.Mutex
	pending      []*rfile // small files sealed, waiting for one sync and their rename
	pendingBytes int64
}

// Small files are committed in batches: their data and metadata are
// written and closed, then one sync of the filesystem makes the whole
// batch durable, then each is renamed into place. One sync for hundreds
// of files costs about what one fsync does, where an fsync each made a
// tree of small files wait on the disk once per file. A file is renamed
// only after the sync that covered it, so nothing appears under its
// final name unsynced.
const (
	commitBatchFileMax = 1 << 20  // files up to this size are batched
	commitBatchFiles   = 256      // a batch is flushed at this many files
	commitBatchBytes   = 32 << 20 // or this many bytes
)

func newReceiver(cfg recvConfig) *receiver {
	return &receiver{cfg: cfg, dirty: make(map[string]bool)}
}

func (r *receiver) dst(p string) string {
	if r.cfg.dest == "" {
		return p
	}
	return r.cfg.dest + "/" + p
}

// plan checks the whole manifest against the destination before anything
// is written: tree shape, conflicts under the overwrite policy, partial
// files to resume, quotas and free space. Only then does it create the
// directories, and it returns what the sender must send.
func (r *receiver) plan(ctx context.Context) ([]planRec, error) {
	cs := r.cfg.chunkSize
	if err := checkTree(r.entries, r.cfg.links); err != nil {
		return nil, err
	}
	if r.cfg.stream {
		if len(r.entries) != 1 || r.entries[0].Type != TypeFile || r.entries[0].Size != -1 {
			return nil, protoErr("a stream transfer carries exactly one file of unknown size")
		}
	} else {
		for i := range r.entries {
			if e := &r.entries[i]; e.Type == TypeFile && (e.Size < 0 || chunkCount(e.Size, cs) > maxChunksPerFile) {
				return nil, fmt.Errorf("%w: %q is %d bytes in %d-byte chunks; chunks are at most %d per file",
					ErrLimit, e.Path, e.Size, cs, maxChunksPerFile)
			}
		}
	}
	if r.cfg.dest != "" {
		if fi, err := r.cfg.root.Stat(r.cfg.dest); err == nil && !fi.IsDir() {
			return nil, fmt.Errorf("%w: destination %q is not a directory", ErrConflict, r.cfg.dest)
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, rootErr(r.cfg.dest, err)
		}
	}

	var (
		recs               []planRec
		conflicts          []string
		nconflicts         int
		need, incoming     int64 // bytes to write; bytes the files will hold
		replaced           int64 // bytes of files replaced
		newEntries         int64
		toLock             []string
		stale              []*rfile // skipped files that may have partial files left
		totalFiles, totalB = 0, int64(0)
	)
	conflict := func(p string) {
		if nconflicts < maxErrorPaths {
			conflicts = append(conflicts, p)
		}
		nconflicts++
	}
	r.files = make([]*rfile, len(r.entries))
	blocked := make(map[string]bool) // directories in conflict: not looked into
	for i := range r.entries {
		if i%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		e := &r.entries[i]
		if blocked[path.Dir(e.Path)] {
			blocked[e.Path] = true
			continue
		}
		final := r.dst(e.Path)
		fi, err := r.cfg.root.Lstat(final)
		exists := err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, rootErr(final, err)
		}
		if !exists {
			newEntries++
		}
		switch e.Type {
		case TypeDir:
			if exists && !fi.IsDir() {
				conflict(e.Path + " (not a directory at the destination)")
				blocked[e.Path] = true
			}
			continue
		case TypeSymlink:
			if r.cfg.links != LinksKeep || !exists {
				continue
			}
			if fi.IsDir() {
				conflict(e.Path + " (a directory at the destination)")
				continue
			} else if fi.Mode()&fs.ModeSymlink != 0 {
				if t, err := r.cfg.root.Readlink(final); err == nil && t == e.Target {
					continue
				}
			}
			if r.cfg.overwrite == OverwriteNever {
				conflict(e.Path)
			}
			continue
		}
		f := &rfile{idx: i, e: e, final: final, nchunks: chunkCount(e.Size, cs), exists: exists}
		if exists {
			switch {
			case fi.IsDir():
				conflict(e.Path + " (a directory at the destination)")
				continue
			case !r.cfg.stream && fi.Mode().IsRegular() && fi.Size() == e.Size && fi.ModTime().Unix() == e.ModTime.Unix():
				// Identical by size and modification time (rsync's quick
				// check). Under OverwriteAlways, small files are also
				// compared by hash, which the sender computes.
				if r.cfg.overwrite == OverwriteAlways && e.Size <= quickHashMax {
					h, err := r.fileRoot(final, e.Size)
					if err != nil {
						return nil, err
					}
					f.check = &h
					recs = append(recs, planRec{file: uint32(i), action: planCheck, root: h})
					break
				}
				recs = append(recs, planRec{file: uint32(i), action: planSkip, reason: skipIdentical})
				stale = append(stale, f)
				continue
			case r.cfg.overwrite == OverwriteNever:
				conflict(e.Path)
				continue
			case r.cfg.overwrite == OverwriteNewer && !e.ModTime.After(fi.ModTime()):
				recs = append(recs, planRec{file: uint32(i), action: planSkip, reason: skipNewer})
				continue
			}
			if r.cfg.overwrite != OverwriteRename && fi.Mode().IsRegular() {
				replaced += fi.Size()
			}
			if r.cfg.overwrite == OverwriteRename {
				newEntries++
			}
		}
		if r.cfg.stream {
			var b [8]byte
			rand.Read(b[:])
			f.part, f.journal = partNames(final, hex.EncodeToString(b[:]))
			f.nchunks = -1
		} else {
			f.part, f.journal = partNames(final, resumeID(e, cs))
			if f.check == nil {
				if have := r.resumable(f); len(have) > 0 {
					recs = append(recs, planRec{file: uint32(i), action: planResume, have: have})
				}
			}
			need += e.Size - f.resumed
			incoming += e.Size - f.resumed // the partial file is already counted in the usage
		}
		r.files[i] = f
		totalFiles++
		totalB += max(e.Size, 0)
		toLock = append(toLock, final)
	}
	if nconflicts > 0 {
		return nil, &ConflictError{Paths: conflicts, Total: nconflicts}
	}
	if err := r.checkQuota(incoming-replaced, newEntries); err != nil {
		return nil, err
	}
	if err := r.checkSpace(need); err != nil {
		return nil, err
	}
	if r.cfg.lock != nil {
		unlock, err := r.cfg.lock(toLock)
		if err != nil {
			return nil, err
		}
		r.unlock = unlock
	}
	if err := r.makeDirs(); err != nil {
		return nil, err
	}
	for _, f := range stale {
		r.removeStale(f)
	}
	if t := r.cfg.track; t != nil {
		t.plan(totalFiles, totalB)
		for _, rec := range recs {
			if rec.action == planSkip {
				t.skipped(int(rec.file), skipReason(rec.reason), false)
			}
		}
	}
	return recs, nil
}

func skipReason(r byte) string {
	switch r {
	case skipIdentical:
		return "identical at the destination"
	case skipNewer:
		return "newer at the destination"
	}
	return "skipped"
}

// quickHashMax is the largest file compared by hash when it already looks
// identical and the policy would replace it.
const quickHashMax = 1 << 20

// fileRoot computes the whole-file hash of an existing file.
func (r *receiver) fileRoot(name string, size int64) (hash, error) {
	f, err := r.cfg.root.Open(name)
	if err != nil {
		return hash{}, rootErr(name, err)
	}
	defer f.Close()
	cs := r.cfg.chunkSize
	buf := make([]byte, min(int64(cs), size))
	hashes := make([]hash, chunkCount(size, cs))
	for i := range hashes {
		n := chunkLen(size, cs, int64(i))
		if _, err := f.ReadAt(buf[:n], int64(i)*int64(cs)); err != nil {
			return hash{}, fmt.Errorf("reading %s: %w", name, bare(err))
		}
		hashes[i] = chunkHash(buf[:n])
	}
	return rootHash(size, cs, hashes), nil
}

// resumable returns the chunks of f's partial file that its journal lists
// and that still hash as listed.
func (r *receiver) resumable(f *rfile) []have {
	known := readJournal(r.cfg.root, f.journal, f.e, r.cfg.chunkSize, f.nchunks)
	if len(known) == 0 {
		return nil
	}
	pf, err := r.cfg.root.Open(f.part)
	if err != nil {
		return nil
	}
	defer pf.Close()
	if !ownFile(r.cfg.root, f.part, pf) {
		return nil // not a partial file this end wrote: start afresh
	}
	cs := r.cfg.chunkSize
	buf := make([]byte, min(int64(cs), f.e.Size))
	var out []have
	f.known = make(map[uint32]hash, len(known))
	for c, h := range known {
		n := chunkLen(f.e.Size, cs, int64(c))
		if _, err := pf.ReadAt(buf[:n], int64(c)*int64(cs)); err != nil {
			continue
		}
		if chunkHash(buf[:n]) != h {
			continue // corrupt on disk: send it again
		}
		f.known[c] = h
		f.resumed += int64(n)
		out = append(out, have{chunk: c, hash: h})
	}
	slices.SortFunc(out, func(a, b have) int { return cmp.Compare(a.chunk, b.chunk) })
	return out
}

// removeStale deletes a partial file left for an entry that is now
// identical at the destination (a previous run committed it but died
// before removing its journal, or the file came another way).
func (r *receiver) removeStale(f *rfile) {
	part, journal := partNames(f.final, resumeID(f.e, r.cfg.chunkSize))
	r.cfg.root.Remove(part)
	r.cfg.root.Remove(journal)
}

func (r *receiver) checkQuota(bytes, entries int64) error {
	if r.cfg.quotaBytes <= 0 && r.cfg.quotaFiles <= 0 {
		return nil
	}
	usedBytes, usedFiles, err := usage(r.cfg.root)
	if err != nil {
		return err
	}
	r.quotaUse = usedBytes
	return r.cfg.book.reserve(&r.hold, max(bytes, 0), max(entries, 0), func(heldBytes, heldFiles int64) error {
		if q := r.cfg.quotaBytes; q > 0 && usedBytes+heldBytes+bytes > q {
			return fmt.Errorf("%w: %s more would bring the user's files to %s%s, over the quota of %s; delete files first",
				ErrQuota, fmtBytes(bytes), fmtBytes(usedBytes+heldBytes+bytes), heldNote(fmtBytes(heldBytes), heldBytes), fmtBytes(q))
		}
		if q := r.cfg.quotaFiles; q > 0 && usedFiles+heldFiles+entries > q {
			return fmt.Errorf("%w: %d more entries would bring the user's files to %d%s, over the quota of %d; delete files first",
				ErrQuota, entries, usedFiles+heldFiles+entries, heldNote(fmt.Sprint(heldFiles), heldFiles), q)
		}
		return nil
	})
}

func heldNote(what string, n int64) string {
	if n <= 0 {
		return ""
	}
	return " (counting " + what + " that other transfers in progress may add)"
}

// quotaBook keeps, for one root with a quota, what each transfer in
// progress was allowed to add. A transfer's planning measures the files
// under the root, which do not yet hold what the others will write: the
// book adds that. A transfer counts for all it declared until it ends,
// including what it already wrote, which the measure also sees: close to
// the quota, a second transfer may be refused until the first ends,
// never both accepted past it. A nil book holds nothing.
type quotaBook struct {
	mu    sync.Mutex
	holds map[*quotaHold]struct{}
}

// quotaHold is one transfer's part of a quotaBook, guarded by its mutex.
type quotaHold struct{ bytes, files int64 }

// reserve adds bytes and files to h if check, given what the other
// transfers hold, allows it.
func (b *quotaBook) reserve(h *quotaHold, bytes, files int64, check func(heldBytes, heldFiles int64) error) error {
	if b == nil {
		return check(0, 0)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var hb, hf int64
	for o := range b.holds {
		if o != h {
			hb += o.bytes
			hf += o.files
		}
	}
	if err := check(hb, hf); err != nil {
		return err
	}
	h.bytes += bytes
	h.files += files
	if b.holds == nil {
		b.holds = make(map[*quotaHold]struct{})
	}
	b.holds[h] = struct{}{}
	return nil
}

// release forgets h, once its transfer ended.
func (b *quotaBook) release(h *quotaHold) {
	if b == nil {
		return
	}
	b.mu.Lock()
	delete(b.holds, h)
	b.mu.Unlock()
}

// usage adds up the sizes of the regular files under root and counts its
// entries.
func usage(root *os.Root) (bytes, entries int64, err error) {
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		entries++
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			bytes += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("measuring quota usage: %w", bare(err))
	}
	return bytes, entries, nil
}

func (r *receiver) checkSpace(need int64) error {
	if r.cfg.statfs == nil {
		return nil
	}
	avail, err := r.cfg.statfs(r.cfg.root.Name())
	if err != nil || avail < 0 {
		return nil // unknown: the writes will tell
	}
	r.spaceH.written = &r.dataBytes
	return r.cfg.space.reserve(&r.spaceH, filesystemOf(r.cfg.root), need, func(held int64) error {
		if need+r.cfg.reserve+held > avail {
			return fmt.Errorf("%w: the transfer needs %s and %s must stay free, but only %s is available at the destination%s; free some space",
				ErrNoSpace, fmtBytes(need), fmtBytes(r.cfg.reserve), fmtBytes(avail), spaceNote(held))
		}
		return nil
	})
}

func spaceNote(held int64) string {
	if held <= 0 {
		return ""
	}
	return " (" + fmtBytes(held) + " of it promised to other transfers in progress)"
}

// spaceBook keeps what each transfer in progress to one server may still
// write: the free space a transfer's planning measures does not yet hold
// what the others will write, and two transfers that each fit alone must
// not both be accepted past the reserve. A transfer holds what it needed
// at planning, less what it has written since (which the measure then
// sees), until it ends. The server keeps one book for all its roots; a
// transfer counts only the holds on its own filesystem. A nil book holds
// nothing.
type spaceBook struct {
	mu    sync.Mutex
	holds map[*spaceHold]struct{}
}

// spaceHold is one transfer's part of a spaceBook.
type spaceHold struct {
	need    int64         // guarded by the book's mutex
	fs      uint64        // the filesystem written to (filesystemOf); guarded by the book's mutex
	written *atomic.Int64 // the transfer's file data written so far
}

func (h *spaceHold) outstanding() int64 { return max(h.need-h.written.Load(), 0) }

// reserve adds need to h, a transfer writing to filesystem fs, if check,
// given what the other transfers to fs may still write, allows it.
func (b *spaceBook) reserve(h *spaceHold, fs uint64, need int64, check func(held int64) error) error {
	if b == nil {
		return check(0)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	h.fs = fs
	if err := check(b.othersLocked(h)); err != nil {
		return err
	}
	h.need += need
	if b.holds == nil {
		b.holds = make(map[*spaceHold]struct{})
	}
	b.holds[h] = struct{}{}
	return nil
}

// held is what the transfers other than h may still write to its
// filesystem.
func (b *spaceBook) held(h *spaceHold) int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.othersLocked(h)
}

// othersLocked is what the transfers other than h may still write to its
// filesystem; b.mu is held.
func (b *spaceBook) othersLocked(h *spaceHold) int64 {
	var n int64
	for o := range b.holds {
		if o != h && o.fs == h.fs {
			n += o.outstanding()
		}
	}
	return n
}

// release forgets h, once its transfer ended.
func (b *spaceBook) release(h *spaceHold) {
	if b == nil {
		return
	}
	b.mu.Lock()
	delete(b.holds, h)
	b.mu.Unlock()
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// makeDirs creates the destination and the manifest's directories,
// owner-writable until finish gives them their modes.
func (r *receiver) makeDirs() error {
	if r.cfg.dest != "" {
		if err := r.cfg.root.MkdirAll(r.cfg.dest, 0o755); err != nil {
			return rootErr(r.cfg.dest, err)
		}
	}
	for i := range r.entries {
		e := &r.entries[i]
		if e.Type != TypeDir {
			continue
		}
		name := r.dst(e.Path)
		err := r.cfg.root.Mkdir(name, 0o700)
		if errors.Is(err, fs.ErrExist) {
			fi, lerr := r.cfg.root.Lstat(name)
			if lerr != nil {
				return rootErr(name, lerr)
			}
			if !fi.IsDir() {
				return fmt.Errorf("%w: %s changed into a %s during the transfer", ErrConflict, e.Path, fi.Mode().Type())
			}
			if fi.Mode().Perm()&0o700 != 0o700 {
				err = r.cfg.root.Chmod(name, fi.Mode().Perm()|0o700)
			} else {
				err = nil
			}
		} else if err == nil {
			r.markDirty(path.Dir(name))
		}
		if err != nil {
			return rootErr(name, err)
		}
	}
	return nil
}

func (r *receiver) markDirty(dir string) {
	r.mu.Lock()
	r.dirty[dir] = true
	r.mu.Unlock()
}

// rootErr words an error from an os.Root operation, marking escapes.
func rootErr(name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "escapes") {
		return &UnsafePathError{Path: name, Reason: "it resolves outside the root through a symbolic link"}
	}
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: %s: %v", ErrPermission, name, err)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return err
}

// file returns the wanted file a frame names.
func (r *receiver) file(idx uint32) (*rfile, error) {
	if int64(idx) >= int64(len(r.files)) || r.files[idx] == nil {
		return nil, protoErr("data for entry %d, which needs none", idx)
	}
	return r.files[idx], nil
}

// expect checks a chunk header against the manifest before its data is
// decompressed or hashed.
func (r *receiver) expect(h *chunkHeader) (string, error) {
	f, err := r.file(h.file)
	if err != nil {
		return "", err
	}
	if f.nchunks < 0 {
		if int(h.size) > r.cfg.chunkSize {
			return "", fmt.Errorf("%w: chunk %d of %q is %d bytes, more than the chunk size %d", ErrIntegrity, h.index, f.e.Path, h.size, r.cfg.chunkSize)
		}
		return f.e.Path, nil
	}
	if int64(h.index) >= f.nchunks {
		return "", fmt.Errorf("%w: chunk %d of %q, which has %d chunks (more data than its declared size %d)",
			ErrIntegrity, h.index, f.e.Path, f.nchunks, f.e.Size)
	}
	if want := chunkLen(f.e.Size, r.cfg.chunkSize, int64(h.index)); int(h.size) != want {
		return "", fmt.Errorf("%w: chunk %d of %q is %d bytes, expected %d", ErrIntegrity, h.index, f.e.Path, h.size, want)
	}
	return f.e.Path, nil
}

// write stores a chunk whose data the caller verified against h.hash. It
// returns the index of a file it committed, or -1.
func (r *receiver) write(h *chunkHeader, data []byte, wire int) (int, byte, error) {
	f, err := r.file(h.file)
	if err != nil {
		return -1, 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == fileFailed {
		return -1, 0, f.err
	}
	if f.state != fileWanted {
		return -1, 0, protoErr("data for %q after it was finished", f.e.Path)
	}
	if f.nchunks < 0 {
		if err := r.streamCheck(f, h, len(data)); err != nil {
			return -1, 0, r.fail(f, err)
		}
	}
	if err := r.openPart(f); err != nil {
		return -1, 0, r.fail(f, err)
	}
	off := int64(h.index) * int64(r.cfg.chunkSize)
	if err := f.writeChunk(data, off); err != nil {
		return -1, 0, r.fail(f, wrapWriteErr(f.e.Path, err))
	}
	r.dataBytes.Add(int64(len(data)))
	if f.nchunks > 1 && f.dio == nil {
		startWriteback(f.f, off, int64(len(data)))
	}
	if f.nchunks < 0 {
		f.hashes = append(f.hashes, h.hash)
		f.written += int64(len(data))
	} else {
		if f.j != nil {
			f.jbuf = journalRecord(f.jbuf[:0], h.index, &h.hash)
			if _, err := f.j.Write(f.jbuf); err != nil {
				return -1, 0, r.fail(f, wrapWriteErr(f.e.Path, err))
			}
		}
		if !f.got[h.index] {
			f.got[h.index] = true
			f.ngot++
		}
		f.hashes[h.index] = h.hash
	}
	if t := r.cfg.track; t != nil {
		r.track(f)
		t.progress(f.idx, int64(len(data)), int64(wire), false)
	}
	return r.maybeCommit(f)
}

// writeChunk writes a chunk's data at off. With direct I/O the data is
// padded with zeros to the alignment (the commit truncates the file to
// its size), after a copy to an aligned buffer if it is not in one with
// room for the padding (chunks read by a conn are).
func (f *rfile) writeChunk(data []byte, off int64) error {
	if f.dio == nil {
		_, err := f.f.WriteAt(data, off)
		return err
	}
	n := len(data)
	padded := roundUp(n, f.align)
	if !isAligned(data, dioAlign) || cap(data) < padded {
		b := alignedBuf(n)
		copy(b, data)
		data = b
	}
	data = data[:padded]
	clear(data[n:])
	_, err := f.f.WriteAt(data, off)
	if errors.Is(err, syscall.EINVAL) && setDirect(f.dio, false) == nil {
		// The filesystem refused direct I/O after all: go through the
		// page cache from here on.
		f.dio, f.align = nil, 0
		_, err = f.f.WriteAt(data[:n], off)
	}
	return err
}

// streamCheck enforces order, chunk sizes, quota and free space for a
// file of unknown size.
func (r *receiver) streamCheck(f *rfile, h *chunkHeader, n int) error {
	if int64(h.index) != int64(len(f.hashes)) {
		return protoErr("stream chunk %d out of order (expected %d)", h.index, len(f.hashes))
	}
	if f.short {
		return fmt.Errorf("%w: stream chunk after a short one", ErrIntegrity)
	}
	if len(f.hashes) >= maxChunksPerFile {
		return fmt.Errorf("%w: the stream is longer than %d chunks", ErrLimit, maxChunksPerFile)
	}
	f.short = n < r.cfg.chunkSize
	total := f.written + int64(n)
	if q := r.cfg.quotaBytes; q > 0 {
		err := r.cfg.book.reserve(&r.hold, int64(n), 0, func(held, _ int64) error {
			if r.quotaUse+held+total > q {
				return fmt.Errorf("%w: the stream reached %s, over the user's quota of %s (%s already in use%s)",
					ErrQuota, fmtBytes(total), fmtBytes(q), fmtBytes(r.quotaUse), heldNote(fmtBytes(held), held))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if r.cfg.statfs != nil {
		held := r.cfg.space.held(&r.spaceH)
		if avail, err := r.cfg.statfs(r.cfg.root.Name()); err == nil && avail >= 0 && int64(n)+r.cfg.reserve+held > avail {
			return fmt.Errorf("%w: only %s free at the destination%s and %s must stay free; free some space",
				ErrNoSpace, fmtBytes(avail), spaceNote(held), fmtBytes(r.cfg.reserve))
		}
	}
	return nil
}

// openPart opens f's partial file and journal on its first chunk.
func (r *receiver) openPart(f *rfile) error {
	if f.f != nil {
		return nil
	}
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return fmt.Errorf("%w: the transfer has ended", ErrIncomplete)
	}
	if r.open >= r.cfg.limits.MaxOpenFiles {
		r.mu.Unlock()
		return fmt.Errorf("%w: more than %d files under way at once", ErrLimit, r.cfg.limits.MaxOpenFiles)
	}
	r.open++
	r.mu.Unlock()
	pf, err := openPart(r.cfg.root, f.part, len(f.known) == 0)
	if err != nil {
		r.closed()
		return rootErr(f.part, err)
	}
	f.dio, f.align = nil, 0
	if f.nchunks < 0 || f.e.Size > commitBatchFileMax {
		// Small files stay in the page cache, to be synced in batches.
		if a := useDirect(pf, r.cfg.chunkSize); a > 0 {
			f.dio, f.align = pf, a
		}
	}
	var p partFile = pf
	if r.cfg.wrap != nil {
		p = r.cfg.wrap(f.part, p)
	}
	if f.nchunks >= 0 {
		f.hashes = make([]hash, f.nchunks)
		f.got = make([]bool, f.nchunks)
	}
	if f.nchunks > 1 {
		// A journal, for files with something to resume.
		j, err := createFresh(r.cfg.root, f.journal, os.O_WRONLY)
		if err != nil {
			p.Close()
			r.closed()
			return rootErr(f.journal, err)
		}
		// Rewrite the journal with the chunks verified at planning, so
		// that a torn tail never precedes new records.
		b := journalHeader(f.e, r.cfg.chunkSize)
		for c, h := range f.known {
			b = journalRecord(b, c, &h)
		}
		if _, err := j.Write(b); err != nil {
			j.Close()
			p.Close()
			r.closed()
			return wrapWriteErr(f.e.Path, err)
		}
		f.j = j
		for c, h := range f.known {
			f.hashes[c] = h
			f.got[c] = true
			f.ngot++
		}
	}
	f.f = p
	r.markDirty(path.Dir(f.final))
	return nil
}

// openPart opens a partial file for writing: a new one (fresh), or the
// one whose chunks were verified at planning. It never writes through a
// link, or into a file with other names: anyone who can write in the
// destination directory can predict a partial file's name, and os.Root
// follows a link at the last component to anywhere under the root.
func openPart(root *os.Root, name string, fresh bool) (*os.File, error) {
	if fresh {
		return createFresh(root, name, os.O_RDWR)
	}
	f, err := root.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if !ownFile(root, name, f) {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("the partial file was replaced since planning; run the same command again")}
	}
	return f, nil
}

// createFresh replaces whatever is at name (a link is removed, never
// followed) with a new, empty file of this process's. Usually nothing is
// there: it creates first, and removes and creates again only when that
// finds a name in the way (each call through root walks the path anew).
func createFresh(root *os.Root, name string, flag int) (*os.File, error) {
	flag |= os.O_CREATE | os.O_EXCL
	f, err := root.OpenFile(name, flag, 0o600)
	if !errors.Is(err, fs.ErrExist) {
		return f, err
	}
	if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return root.OpenFile(name, flag, 0o600)
}

// ownFile reports whether f, opened as name, is the regular file at name
// itself (not one reached through a link) and has no other name.
func ownFile(root *os.Root, name string, f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	li, err := root.Lstat(name)
	return err == nil && fi.Mode().IsRegular() && os.SameFile(fi, li) && nlink(fi) == 1
}

func (r *receiver) closed() {
	r.mu.Lock()
	r.open--
	r.mu.Unlock()
}

// end handles a FileEnd: the file's size and whole-file hash.
func (r *receiver) end(fe *fileEnd) (int, byte, error) {
	f, err := r.file(fe.file)
	if err != nil {
		return -1, 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == fileFailed {
		return -1, 0, f.err
	}
	if f.state != fileWanted {
		return -1, 0, protoErr("end of %q after it was finished", f.e.Path)
	}
	if f.root != nil {
		return -1, 0, protoErr("two ends for %q", f.e.Path)
	}
	if f.nchunks >= 0 && int64(fe.size) != f.e.Size {
		return -1, 0, r.fail(f, fmt.Errorf("%w: %q ended at %d bytes, the manifest said %d", ErrIntegrity, f.e.Path, fe.size, f.e.Size))
	}
	if f.nchunks < 0 && int64(fe.size) != f.written {
		return -1, 0, r.fail(f, fmt.Errorf("%w: the stream ended claiming %d bytes, %d were received", ErrIntegrity, fe.size, f.written))
	}
	root := fe.root
	f.root = &root
	if f.check != nil && f.ngot == 0 && root == *f.check {
		// Identical by hash: the sender sends no chunk.
		f.state = fileDone
		if t := r.cfg.track; t != nil {
			t.skipped(f.idx, "identical at the destination (same hash)", true)
		}
		return f.idx, committedSkipped, nil
	}
	if f.nchunks < 0 || f.e.Size == 0 {
		if err := r.openPart(f); err != nil {
			return -1, 0, r.fail(f, err)
		}
	}
	return r.maybeCommit(f)
}

func (r *receiver) maybeCommit(f *rfile) (int, byte, error) {
	if f.root == nil || (f.nchunks >= 0 && f.ngot < f.nchunks) {
		return -1, 0, nil
	}
	if r.cfg.track != nil {
		r.track(f)
	}
	if f.nchunks >= 0 && f.e.Size <= commitBatchFileMax && canSyncFS {
		if err := r.seal(f, false); err != nil {
			return -1, 0, r.fail(f, err)
		}
		r.pmu.Lock()
		r.pending = append(r.pending, f)
		r.pendingBytes += f.e.Size
		r.pmu.Unlock()
		return -1, 0, nil
	}
	if err := r.commit(f); err != nil {
		return -1, 0, r.fail(f, err)
	}
	r.committed.Add(1)
	f.state = fileDone
	if t := r.cfg.track; t != nil {
		t.fileDone(f.idx, max(f.e.Size, f.written))
	}
	return f.idx, committedWritten, nil
}

// commit verifies the whole-file hash, then fsyncs the partial file, sets
// its mode and times and renames it into place.
func (r *receiver) commit(f *rfile) error {
	if err := r.seal(f, true); err != nil {
		return err
	}
	return r.place(f)
}

// seal verifies the whole-file hash, then gives the partial file its
// size, mode and times and closes it; with sync, after an fsync.
func (r *receiver) seal(f *rfile, sync bool) error {
	size := f.e.Size
	if f.nchunks < 0 {
		size = f.written
	}
	if got := rootHash(size, r.cfg.chunkSize, f.hashes); got != *f.root {
		r.discard(f)
		return fmt.Errorf("%w: whole-file hash of %q does not match the sender's; its partial file was removed, run the same command again",
			ErrIntegrity, f.e.Path)
	}
	pf := f.f
	err := pf.Truncate(size)
	if err == nil {
		err = pf.Chmod(f.e.Mode.Perm()) // setuid, setgid and sticky dropped
	}
	if err == nil && sync {
		err = pf.Sync()
	}
	if cerr := pf.Close(); err == nil {
		err = cerr
	}
	f.f = nil
	if f.j != nil {
		f.j.Close()
		f.j = nil
	}
	r.closed()
	if err != nil {
		return wrapWriteErr(f.e.Path, err)
	}
	mt := f.e.ModTime
	if f.nchunks < 0 {
		mt = time.Now()
	}
	if err := r.cfg.root.Chtimes(f.part, mt, mt); err != nil {
		return rootErr(f.part, err)
	}
	return nil
}

// place renames a sealed and synced partial file into place. Under the
// policies that keep existing files (never, for a file absent when
// planned, and rename), a file that appears at the final name after
// finalName looked is not replaced either: the rename does not replace.
func (r *receiver) place(f *rfile) error {
	final, err := r.finalName(f)
	if err != nil {
		return err
	}
	switch {
	case r.cfg.overwrite == OverwriteRename:
		err = r.renameNoReplace(f.part, final)
		for tries := 0; errors.Is(err, fs.ErrExist) && tries < 10; tries++ {
			if final, err = r.freeName(f.final); err == nil {
				err = r.renameNoReplace(f.part, final)
			}
		}
	case r.cfg.overwrite == OverwriteNever && !f.exists:
		err = r.renameNoReplace(f.part, final)
		if errors.Is(err, fs.ErrExist) {
			return &ConflictError{Paths: []string{f.e.Path}, Total: 1}
		}
	default:
		err = r.cfg.root.Rename(f.part, final)
	}
	if err != nil {
		return rootErr(final, err)
	}
	if f.nchunks > 1 {
		r.cfg.root.Remove(f.journal)
	}
	r.markDirty(path.Dir(final))
	return nil
}

// batchFull reports whether the pending small files should be flushed.
func (r *receiver) batchFull() bool {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	return len(r.pending) >= commitBatchFiles || r.pendingBytes >= commitBatchBytes
}

// flush makes the pending small files durable with one sync of the
// filesystem and renames them into place. It returns the entry indexes
// of the files committed. The caller holds no file's lock.
func (r *receiver) flush() ([]int, error) {
	r.pmu.Lock()
	batch := r.pending
	r.pending, r.pendingBytes = nil, 0
	r.pmu.Unlock()
	if len(batch) == 0 {
		return nil, nil
	}
	serr := syncFS(r.cfg.root)
	done := make([]int, 0, len(batch))
	var first error
	for _, f := range batch {
		f.mu.Lock()
		err := serr
		if err == nil {
			err = r.place(f)
		}
		if err != nil {
			r.fail(f, wrapWriteErr(f.e.Path, err))
			first = cmp.Or(first, f.err)
		} else {
			f.state = fileDone
			r.committed.Add(1)
			if t := r.cfg.track; t != nil {
				t.fileDone(f.idx, f.e.Size)
			}
			done = append(done, f.idx)
		}
		f.mu.Unlock()
	}
	return done, first
}

// renameNoReplace renames old to name unless name exists (fs.ErrExist):
// a hard link, which fails on an existing name, then the removal of old.
// Where the filesystem has no hard links it checks, then renames.
func (r *receiver) renameNoReplace(old, name string) error {
	err := r.cfg.root.Link(old, name)
	if err == nil {
		r.cfg.root.Remove(old)
		return nil
	}
	if errors.Is(err, fs.ErrExist) || errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if _, err := r.cfg.root.Lstat(name); err == nil {
		return fs.ErrExist
	}
	return r.cfg.root.Rename(old, name)
}

// finalName applies the overwrite policy at commit time: a file that
// appeared since planning is not replaced under never or rename.
func (r *receiver) finalName(f *rfile) (string, error) {
	switch r.cfg.overwrite {
	case OverwriteNever:
		if _, err := r.cfg.root.Lstat(f.final); err == nil && !f.exists {
			return "", &ConflictError{Paths: []string{f.e.Path}, Total: 1}
		}
	case OverwriteRename:
		return r.freeName(f.final)
	}
	return f.final, nil
}

// freeName returns name, or "name (n).ext" for the smallest n free.
func (r *receiver) freeName(name string) (string, error) {
	if _, err := r.cfg.root.Lstat(name); errors.Is(err, fs.ErrNotExist) {
		return name, nil
	}
	dir, base := path.Split(name)
	ext := path.Ext(base)
	if ext == base {
		ext = ""
	}
	stem := strings.TrimSuffix(base, ext)
	for n := 1; n < 10000; n++ {
		cand := fmt.Sprintf("%s%s (%d)%s", dir, stem, n, ext)
		if _, err := r.cfg.root.Lstat(cand); errors.Is(err, fs.ErrNotExist) {
			return cand, nil
		}
	}
	return "", fmt.Errorf("%w: no free name for %s", ErrConflict, name)
}

// discard removes f's partial file and journal.
func (r *receiver) discard(f *rfile) {
	if f.f != nil {
		f.f.Close()
		f.f = nil
		r.closed()
	}
	if f.j != nil {
		f.j.Close()
		f.j = nil
	}
	r.cfg.root.Remove(f.part)
	r.cfg.root.Remove(f.journal)
}

// fail marks f failed and returns err; the partial file stays for a
// resume, except in stream mode.
func (r *receiver) fail(f *rfile, err error) error {
	if f.state == fileWanted {
		f.state, f.err = fileFailed, err
	}
	return err
}

// track reports the start of f, and the bytes it resumed, once.
func (r *receiver) track(f *rfile) {
	if f.started {
		return
	}
	f.started = true
	r.cfg.track.start(f.idx, f.resumed)
	if f.resumed > 0 {
		r.cfg.track.progress(f.idx, f.resumed, 0, true)
	}
}

// finish runs once the sender is done: it checks that every file arrived,
// creates the links, gives directories their modes and times, and fsyncs
// the directories that changed.
func (r *receiver) finish() error {
	if _, err := r.flush(); err != nil {
		return err
	}
	var missing []string
	n := 0
	for _, f := range r.files {
		if f == nil {
			continue
		}
		f.mu.Lock()
		if f.state != fileDone {
			if n < maxErrorPaths {
				missing = append(missing, f.e.Path)
			}
			n++
		}
		f.mu.Unlock()
	}
	if n > 0 {
		return &incompleteError{paths: missing, total: n}
	}
	links, dirs := 0, 0
	if r.cfg.links == LinksKeep {
		for i := range r.entries {
			e := &r.entries[i]
			if e.Type != TypeSymlink {
				continue
			}
			made, err := r.makeLink(e)
			if err != nil {
				return err
			}
			if made {
				links++
			}
		}
	}
	r.mu.Lock()
	dirty := make([]string, 0, len(r.dirty))
	for d := range r.dirty {
		dirty = append(dirty, d)
	}
	r.mu.Unlock()
	for _, d := range dirty {
		if d == "." {
			d = ""
		}
		if err := syncDir(r.cfg.root, d); err != nil {
			return err
		}
	}
	for i := len(r.entries) - 1; i >= 0; i-- {
		e := &r.entries[i]
		if e.Type != TypeDir {
			continue
		}
		name := r.dst(e.Path)
		if err := r.cfg.root.Chmod(name, e.Mode.Perm()); err != nil {
			return rootErr(name, err)
		}
		if err := r.cfg.root.Chtimes(name, e.ModTime, e.ModTime); err != nil {
			return rootErr(name, err)
		}
		dirs++
	}
	if t := r.cfg.track; t != nil {
		t.count(dirs, links)
	}
	return nil
}

// makeLink creates a kept link; checkTree has vetted its target.
func (r *receiver) makeLink(e *Entry) (bool, error) {
	name := r.dst(e.Path)
	if t, err := r.cfg.root.Readlink(name); err == nil && t == e.Target {
		return false, nil
	}
	if _, err := r.cfg.root.Lstat(name); err == nil {
		switch r.cfg.overwrite {
		case OverwriteNever:
			return false, &ConflictError{Paths: []string{e.Path}, Total: 1}
		case OverwriteRename:
			n, err := r.freeName(name)
			if err != nil {
				return false, err
			}
			name = n
		default:
			if err := r.cfg.root.Remove(name); err != nil {
				return false, rootErr(name, err)
			}
		}
	}
	if err := r.cfg.root.Symlink(e.Target, name); err != nil {
		return false, rootErr(name, err)
	}
	r.markDirty(path.Dir(name))
	return true, nil
}

func syncDir(root *os.Root, name string) error {
	if name == "" {
		name = "."
	}
	d, err := root.Open(name)
	if err != nil {
		return rootErr(name, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("syncing directory %s: %w", name, bare(err))
	}
	return nil
}

// close releases the receiver's files. Partial files stay for a resume,
// except a stream's, which cannot resume.
func (r *receiver) close() {
	// A chunk arriving late must not reopen, and so truncate, a partial
	// file that is kept for a resume.
	r.mu.Lock()
	r.ended = true
	r.mu.Unlock()
	for _, f := range r.files {
		if f == nil {
			continue
		}
		f.mu.Lock()
		if f.nchunks < 0 && f.state != fileDone {
			r.discard(f)
		}
		if f.f != nil {
			f.f.Close()
			f.f = nil
		}
		if f.j != nil {
			f.j.Close()
			f.j = nil
		}
		f.mu.Unlock()
	}
	if r.unlock != nil {
		r.unlock()
		r.unlock = nil
	}
	r.cfg.book.release(&r.hold)
	r.cfg.space.release(&r.spaceH)
}
