package transfer

import (
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
)

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
