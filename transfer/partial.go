package transfer

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
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
	if errors.Is(err, fs.ErrPermission) && makeWritable(root, name) == nil {
		f, err = root.OpenFile(name, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, err
	}
	if !ownFile(root, name, f) {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("the partial file was replaced since planning; run the same command again")}
	}
	return f, nil
}

// makeWritable gives the owner back write permission on a partial file
// that a commit sealed with the file's final mode (read-only, say) but
// did not finish (its fsync failed on a full disk, or the process was
// killed): its chunks were verified at planning, and without this they
// could never be committed by a receiver not running as root.
func makeWritable(root *os.Root, name string) error {
	f, err := root.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if !ownFile(root, name, f) {
		return fs.ErrPermission
	}
	return f.Chmod(0o600)
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
