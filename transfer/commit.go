package transfer

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"strings"
	"time"
)

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

// salvage commits, once a transfer has ended early and nothing writes
// through r any more, what it completed: the files whose every chunk it
// wrote and verified although their FileEnd never came (the sender went
// away after its last chunk), and the small files sealed and waiting for
// their batch's sync. The whole-file hash of the former is the receiver's
// own, over the chunk hashes it verified against the data, which is what
// the sender's FileEnd would have carried. A file holding chunks resumed
// from a previous run that this one did not replace is left for the
// next run, whose sender confirms them: its partial file is complete
// and stays. What fails here stays as it was, for the next run.
func (r *receiver) salvage() {
	for _, f := range r.files {
		if f == nil {
			continue
		}
		f.mu.Lock()
		if f.state == fileWanted && f.root == nil && f.f != nil && f.nchunks > 0 && f.ngot == f.nchunks && len(f.known) == 0 {
			root := rootHash(f.e.Size, r.cfg.chunkSize, f.hashes)
			f.root = &root
			r.maybeCommit(f)
		}
		f.mu.Unlock()
	}
	r.flush()
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

func (r *receiver) markDirty(dir string) {
	r.mu.Lock()
	r.dirty[dir] = true
	r.mu.Unlock()
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
