package transfer

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// source is what a sender reads: an *os.File opened locally or through
// an os.Root.
type source interface {
	io.ReaderAt
	Stat() (fs.FileInfo, error)
	Close() error
}

// sender reads files named by a manifest and sends the chunks a plan
// says the receiver lacks. Several data streams use it at once.
type sender struct {
	entries []Entry
	cs      int
	open    func(i int) (source, error)
	track   *tracker
	plan    map[uint32]*planRec

	mu    sync.Mutex
	files map[uint32]*sfile

	// For the server's report: file data sent, and files ended.
	dataBytes, ended atomic.Int64
}

// sfile gathers a file's chunk hashes, from whichever streams read them,
// to compute its whole-file hash.
type sfile struct {
	hashes  []hash
	seen    []bool
	nseen   int64
	same    int8 // planCheck: 0 not compared yet, 1 identical, -1 different
	started bool
}

func newSender(entries []Entry, cs int, open func(int) (source, error)) *sender {
	return &sender{entries: entries, cs: cs, open: open, files: make(map[uint32]*sfile)}
}

// addPlan takes the receiver's plan records as they arrive, checking
// each against the manifest (a pull's plan comes from the client): a
// file named twice is refused unless both records list resumed chunks
// and the second adds some, and a file's resumed chunks cannot outnumber
// its chunks. So what a plan can make the sender hold is bounded by the
// manifest, however many records the peer sends. recs may be reused by
// the caller afterwards.
func (s *sender) addPlan(recs []planRec) error {
	if s.plan == nil {
		s.plan = make(map[uint32]*planRec)
	}
	for i := range recs {
		r := recs[i]
		if int64(r.file) >= int64(len(s.entries)) || s.entries[r.file].Type != TypeFile {
			return protoErr("plan names entry %d, which is not a file", r.file)
		}
		n := chunkCount(s.entries[r.file].Size, s.cs)
		for _, h := range r.have {
			if int64(h.chunk) >= n {
				return protoErr("plan claims chunk %d of entry %d, which has %d", h.chunk, r.file, n)
			}
		}
		if prev := s.plan[r.file]; prev != nil {
			// A long resume list comes in several records.
			if prev.action != planResume || r.action != planResume || len(r.have) == 0 || int64(len(prev.have)+len(r.have)) > n {
				return protoErr("plan names entry %d twice", r.file)
			}
			prev.have = append(prev.have, r.have...)
			continue
		}
		if int64(len(r.have)) > n {
			return protoErr("plan claims %d chunks of entry %d, which has %d", len(r.have), r.file, n)
		}
		s.plan[r.file] = &r
	}
	return nil
}

// setPlan takes a whole plan (see addPlan).
func (s *sender) setPlan(recs []planRec) error {
	if err := s.addPlan(recs); err != nil {
		return err
	}
	s.sortPlan()
	return nil
}

// sortPlan readies the plan for hasChunk, once every record is in.
func (s *sender) sortPlan() {
	if s.plan == nil {
		s.plan = make(map[uint32]*planRec)
	}
	for _, r := range s.plan {
		slices.SortFunc(r.have, func(a, b have) int { return cmp.Compare(a.chunk, b.chunk) })
	}
}

// wanted reports whether file i needs any work (data, or a FileEnd).
func (s *sender) wanted(i int) bool {
	if s.entries[i].Type != TypeFile {
		return false
	}
	r := s.plan[uint32(i)]
	return r == nil || r.action != planSkip
}

// resumed is the bytes of file i the receiver already holds.
func (s *sender) resumed(i int) int64 {
	r := s.plan[uint32(i)]
	if r == nil {
		return 0
	}
	var n int64
	for _, h := range r.have {
		n += int64(chunkLen(s.entries[i].Size, s.cs, int64(h.chunk)))
	}
	return n
}

func (s *sender) state(file uint32) *sfile {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[file]
	if f == nil {
		n := chunkCount(s.entries[file].Size, s.cs)
		f = &sfile{hashes: make([]hash, n), seen: make([]bool, n)}
		s.files[file] = f
	}
	return f
}

// checkSpan validates a span against the manifest (a pull's spans come
// from the client).
func (s *sender) checkSpan(sp span) error {
	if int64(sp.file) >= int64(len(s.entries)) || s.entries[sp.file].Type != TypeFile {
		return protoErr("want names entry %d, which is not a file", sp.file)
	}
	n := chunkCount(s.entries[sp.file].Size, s.cs)
	if int64(sp.first)+int64(sp.count) > n || sp.count > maxWantChunks {
		return protoErr("want asks for chunks %d..%d of entry %d, which has %d", sp.first, int64(sp.first)+int64(sp.count), sp.file, n)
	}
	return nil
}

const maxWantChunks = 4096

// sendSpan reads, hashes and sends the chunks of a span that the
// receiver lacks, then the file's FileEnd if this completed its hashes.
func (s *sender) sendSpan(c *conn, b *streamBufs, sp span) error {
	e := &s.entries[sp.file]
	f := s.state(sp.file)
	src, err := s.open(int(sp.file))
	if err != nil {
		return fmt.Errorf("opening %s: %w", e.Path, bare(err))
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil {
		return fmt.Errorf("reading %s: %w", e.Path, bare(err))
	} else if fi.Size() != e.Size || !fi.ModTime().Equal(e.ModTime) {
		return fmt.Errorf("%s changed while it was being sent; run the command again", e.Path)
	}
	rec := s.plan[sp.file]
	same, err := s.compare(f, rec, src, b, e)
	if err != nil {
		return err
	}
	if t := s.track; t != nil {
		s.mu.Lock()
		first := !f.started && same != 1
		f.started = true
		s.mu.Unlock()
		if first {
			t.start(int(sp.file), s.resumed(int(sp.file)))
		}
	}
	buf := b.chunk(s.cs)
	for c64 := int64(sp.first); c64 < int64(sp.first)+int64(sp.count); c64++ {
		n := chunkLen(e.Size, s.cs, c64)
		if _, err := src.ReadAt(buf[:n], c64*int64(s.cs)); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%s shrank while it was being sent; run the command again", e.Path)
			}
			return fmt.Errorf("reading %s: %w", e.Path, bare(err))
		}
		h := chunkHash(buf[:n])
		idx := uint32(c64)
		skip := same == 1 || (rec != nil && rec.action == planResume && hasChunk(rec, idx, &h))
		if !skip {
			data, flags := b.compress(buf[:n])
			if err := c.sendChunk(&chunkHeader{file: sp.file, index: idx, flags: flags, size: uint32(n), hash: h}, data); err != nil {
				return err
			}
			s.dataBytes.Add(int64(n))
			if s.track != nil {
				s.track.progress(int(sp.file), int64(n), int64(len(data)), false)
			}
			b.sent = time.Now()
		} else {
			if s.track != nil && same != 1 {
				s.track.progress(int(sp.file), int64(n), 0, true)
			}
			if b.idle > 0 && time.Since(b.sent) > b.idle {
				if err := c.send(frameKeepalive, nil); err != nil {
					return err
				}
				b.sent = time.Now()
			}
		}
		if done, root := s.record(f, sp.file, idx, &h); done {
			if err := s.sendEnd(c, sp.file, root); err != nil {
				return err
			}
		}
	}
	if sp.count == 0 && e.Size == 0 {
		return s.sendEnd(c, sp.file, rootHash(0, s.cs, nil))
	}
	return nil
}

func (s *sender) sendEnd(c *conn, file uint32, root hash) error {
	size := s.entries[file].Size
	s.mu.Lock()
	delete(s.files, file)
	s.mu.Unlock()
	s.ended.Add(1)
	return c.send(frameFileEnd, func(e *enc) { encodeFileEnd(e, &fileEnd{file: file, size: uint64(size), root: root}) })
}

// compare settles a planCheck: it reads the (small) file whole and
// compares its hash with the receiver's.
func (s *sender) compare(f *sfile, rec *planRec, src source, b *streamBufs, e *Entry) (int8, error) {
	if rec == nil || rec.action != planCheck || e.Size > quickHashMax {
		return 0, nil
	}
	s.mu.Lock()
	same := f.same
	s.mu.Unlock()
	if same != 0 {
		return same, nil
	}
	buf := b.chunk(s.cs)
	hashes := make([]hash, chunkCount(e.Size, s.cs))
	for i := range hashes {
		n := chunkLen(e.Size, s.cs, int64(i))
		if _, err := src.ReadAt(buf[:n], int64(i)*int64(s.cs)); err != nil {
			return 0, fmt.Errorf("reading %s: %w", e.Path, bare(err))
		}
		hashes[i] = chunkHash(buf[:n])
	}
	same = -1
	if rootHash(e.Size, s.cs, hashes) == rec.root {
		same = 1
	}
	s.mu.Lock()
	f.same = same
	s.mu.Unlock()
	return same, nil
}

// hasChunk reports whether the receiver holds chunk c with hash h
// (setPlan sorted r.have).
func hasChunk(r *planRec, c uint32, h *hash) bool {
	lo, hi := 0, len(r.have)
	for lo < hi {
		m := (lo + hi) / 2
		switch {
		case r.have[m].chunk == c:
			return r.have[m].hash == *h
		case r.have[m].chunk < c:
			lo = m + 1
		default:
			hi = m
		}
	}
	return false
}

// record notes a chunk hash; when it was the file's last, it returns the
// whole-file hash.
func (s *sender) record(f *sfile, file, idx uint32, h *hash) (bool, hash) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !f.seen[idx] {
		f.seen[idx] = true
		f.nseen++
	}
	f.hashes[idx] = *h
	if f.nseen < int64(len(f.hashes)) {
		return false, hash{}
	}
	return true, rootHash(s.entries[file].Size, s.cs, f.hashes)
}

// sendStream sends r as file 0 of unknown size: chunks in order, then a
// FileEnd with the size and whole-file hash.
func (s *sender) sendStream(c *conn, b *streamBufs, r io.Reader) error {
	buf := b.chunk(s.cs)
	var (
		hashes []hash
		size   int64
	)
	if s.track != nil {
		s.track.start(0, 0)
	}
	for idx := uint32(0); ; idx++ {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			h := chunkHash(buf[:n])
			hashes = append(hashes, h)
			data, flags := b.compress(buf[:n])
			if err := c.sendChunk(&chunkHeader{index: idx, flags: flags, size: uint32(n), hash: h}, data); err != nil {
				return err
			}
			size += int64(n)
			if s.track != nil {
				s.track.progress(0, int64(n), int64(len(data)), false)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the input: %w", err)
		}
		if len(hashes) >= maxChunksPerFile {
			return fmt.Errorf("%w: the input is longer than %d chunks of %d bytes", ErrLimit, maxChunksPerFile, s.cs)
		}
	}
	root := rootHash(size, s.cs, hashes)
	return c.send(frameFileEnd, func(e *enc) { encodeFileEnd(e, &fileEnd{size: uint64(size), root: root}) })
}
