package transfer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
)

// plan checks the whole manifest against the destination before anything
// is written: tree shape, conflicts under the overwrite policy, partial
// files to resume, quotas and free space. Only then does it create the
// directories, and it returns what the sender must send.
func (r *receiver) plan(ctx context.Context) ([]planRec, error) {
	if err := r.checkManifest(); err != nil {
		return nil, err
	}
	if err := r.lockFiles(); err != nil {
		return nil, err
	}
	p := &planner{r: r, blocked: make(map[string]bool)}
	r.files = make([]*rfile, len(r.entries))
	for i := range r.entries {
		if i%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err := p.entry(i); err != nil {
			return nil, err
		}
	}
	if p.nconflicts > 0 {
		return nil, &ConflictError{Paths: p.conflicts, Total: p.nconflicts}
	}
	if err := p.reserve(); err != nil {
		return nil, err
	}
	if err := p.prepare(); err != nil {
		return nil, err
	}
	return p.recs, nil
}

// checkManifest checks what the manifest alone can tell, and that the
// destination is a directory if it exists.
func (r *receiver) checkManifest() error {
	cs := r.cfg.chunkSize
	if err := checkTree(r.entries, r.cfg.links); err != nil {
		return err
	}
	if r.cfg.stream {
		if len(r.entries) != 1 || r.entries[0].Type != TypeFile || r.entries[0].Size != -1 {
			return protoErr("a stream transfer carries exactly one file of unknown size")
		}
	} else {
		for i := range r.entries {
			if e := &r.entries[i]; e.Type == TypeFile && (e.Size < 0 || chunkCount(e.Size, cs) > maxChunksPerFile) {
				return fmt.Errorf("%w: %q is %d bytes in %d-byte chunks; chunks are at most %d per file",
					ErrLimit, e.Path, e.Size, cs, maxChunksPerFile)
			}
		}
	}
	if r.cfg.dest != "" {
		if fi, err := r.cfg.root.Stat(r.cfg.dest); err == nil && !fi.IsDir() {
			return fmt.Errorf("%w: destination %q is not a directory", ErrConflict, r.cfg.dest)
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rootErr(r.cfg.dest, err)
		}
	}
	return nil
}

// planner is what plan gathers, entry by entry, before it decides.
type planner struct {
	r              *receiver
	recs           []planRec
	conflicts      []string
	nconflicts     int
	need, incoming int64 // bytes to write; bytes the files will hold
	replaced       int64 // bytes of files replaced
	newEntries     int64
	toLock         []string
	stale          []*rfile        // skipped files that may have partial files left
	blocked        map[string]bool // directories in conflict: not looked into
	totalFiles     int
	totalB         int64
}

// conflict counts a conflict, and names it among the first
// maxErrorPaths.
func (p *planner) conflict(name string) {
	if p.nconflicts < maxErrorPaths {
		p.conflicts = append(p.conflicts, name)
	}
	p.nconflicts++
}

// entry plans entry i against what is at its destination.
func (p *planner) entry(i int) error {
	r := p.r
	e := &r.entries[i]
	if p.blocked[path.Dir(e.Path)] {
		p.blocked[e.Path] = true
		return nil
	}
	final := r.dst(e.Path)
	fi, err := r.cfg.root.Lstat(final)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return rootErr(final, err)
	}
	if !exists {
		p.newEntries++
	}
	switch e.Type {
	case TypeDir:
		if exists && !fi.IsDir() {
			p.conflict(e.Path + " (not a directory at the destination)")
			p.blocked[e.Path] = true
		}
		return nil
	case TypeSymlink:
		p.symlink(e, final, fi, exists)
		return nil
	}
	return p.file(i, e, final, fi, exists)
}

// symlink plans a link: kept links conflict with what they would
// replace only as the overwrite policy says; finish creates them.
func (p *planner) symlink(e *Entry, final string, fi fs.FileInfo, exists bool) {
	r := p.r
	if r.cfg.links != LinksKeep || !exists {
		return
	}
	if fi.IsDir() {
		p.conflict(e.Path + " (a directory at the destination)")
		return
	} else if fi.Mode()&fs.ModeSymlink != 0 {
		if t, err := r.cfg.root.Readlink(final); err == nil && t == e.Target {
			return
		}
	}
	if r.cfg.overwrite == OverwriteNever {
		p.conflict(e.Path)
	}
}

// file plans a regular file: skipped, compared by hash, resumed or sent
// whole.
func (p *planner) file(i int, e *Entry, final string, fi fs.FileInfo, exists bool) error {
	r := p.r
	f := &rfile{idx: i, e: e, final: final, nchunks: chunkCount(e.Size, r.cfg.chunkSize), exists: exists}
	if exists {
		send, err := p.existing(f, fi)
		if err != nil || !send {
			return err
		}
	}
	p.partial(f)
	r.files[i] = f
	p.totalFiles++
	p.totalB += max(e.Size, 0)
	p.toLock = append(p.toLock, final)
	return nil
}

// existing applies the overwrite policy to a file whose destination
// exists, fi; it reports whether the file is to be received.
func (p *planner) existing(f *rfile, fi fs.FileInfo) (bool, error) {
	r, e, i := p.r, f.e, f.idx
	switch {
	case fi.IsDir():
		p.conflict(e.Path + " (a directory at the destination)")
		return false, nil
	case !r.cfg.stream && fi.Mode().IsRegular() && fi.Size() == e.Size && fi.ModTime().Unix() == e.ModTime.Unix():
		// Identical by size and modification time (rsync's quick
		// check). Under OverwriteAlways, small files are also
		// compared by hash, which the sender computes.
		if r.cfg.overwrite == OverwriteAlways && e.Size <= quickHashMax {
			h, err := r.fileRoot(f.final, e.Size)
			if err != nil {
				return false, err
			}
			f.check = &h
			p.recs = append(p.recs, planRec{file: uint32(i), action: planCheck, root: h})
			break
		}
		p.recs = append(p.recs, planRec{file: uint32(i), action: planSkip, reason: skipIdentical})
		p.stale = append(p.stale, f)
		return false, nil
	case r.cfg.overwrite == OverwriteNever:
		p.conflict(e.Path)
		return false, nil
	case r.cfg.overwrite == OverwriteNewer && !e.ModTime.After(fi.ModTime()):
		p.recs = append(p.recs, planRec{file: uint32(i), action: planSkip, reason: skipNewer})
		return false, nil
	}
	if r.cfg.overwrite != OverwriteRename && fi.Mode().IsRegular() {
		p.replaced += fi.Size()
	}
	if r.cfg.overwrite == OverwriteRename {
		p.newEntries++
	}
	return true, nil
}

// partial names f's partial file and journal and, unless f is a stream,
// finds the chunks a previous run left in them and counts what is left
// to write.
func (p *planner) partial(f *rfile) {
	r, e := p.r, f.e
	if r.cfg.stream {
		var b [8]byte
		rand.Read(b[:])
		f.part, f.journal = partNames(f.final, hex.EncodeToString(b[:]))
		f.nchunks = -1
		return
	}
	f.part, f.journal = partNames(f.final, resumeID(e, r.cfg.chunkSize))
	if f.check == nil {
		if have := r.resumable(f); len(have) > 0 {
			p.recs = append(p.recs, planRec{file: uint32(f.idx), action: planResume, have: have})
		}
	}
	p.need += e.Size - f.resumed
	p.incoming += e.Size - f.resumed // the partial file is already counted in the usage
}

// reserve holds the quota and free space the plan needs, and releases the
// reserved destination paths of the files it will not write.
func (p *planner) reserve() error {
	r := p.r
	if err := r.checkQuota(p.incoming-p.replaced, p.newEntries); err != nil {
		return err
	}
	if err := r.checkSpace(p.need); err != nil {
		return err
	}
	if r.held != nil {
		r.held.keep(p.toLock)
	}
	return nil
}

// lockFiles reserves the destination of every file in the manifest
// before plan looks at any: another transfer of the same files may still
// be committing them (one just interrupted, whose rerun this may be), and
// must finish first, or this plan would count on a partial file that is
// then renamed away, or miss the file it commits. Once planned, only the
// files to be written stay reserved (reserve).
func (r *receiver) lockFiles() error {
	if r.cfg.lock == nil {
		return nil
	}
	var paths []string
	for i := range r.entries {
		if e := &r.entries[i]; e.Type == TypeFile {
			paths = append(paths, r.dst(e.Path))
		}
	}
	held, err := r.cfg.lock(paths)
	if err != nil {
		return err
	}
	r.held = held
	return nil
}

// prepare creates the directories, removes the partial files of skipped
// files and reports the plan to the tracker.
func (p *planner) prepare() error {
	r := p.r
	if err := r.makeDirs(); err != nil {
		return err
	}
	for _, f := range p.stale {
		r.removeStale(f)
	}
	if t := r.cfg.track; t != nil {
		t.plan(p.totalFiles, p.totalB)
		for _, rec := range p.recs {
			if rec.action == planSkip {
				t.skipped(int(rec.file), skipReason(rec.reason), false)
			}
		}
	}
	return nil
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
