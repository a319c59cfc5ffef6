package transfer

import (
	"errors"
	"fmt"
	"syscall"
)

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
		delete(f.known, h.index)
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
	// Open the partial file if no chunk has: that of an empty file or a
	// stream, and that of a file with resumed chunks, which count as held
	// only once it is open. When every chunk was resumed the sender sends
	// none, and without this the rerun would never commit the file.
	if f.nchunks < 0 || f.e.Size == 0 || len(f.known) > 0 {
		if err := r.openPart(f); err != nil {
			return -1, 0, r.fail(f, err)
		}
	}
	return r.maybeCommit(f)
}
