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
