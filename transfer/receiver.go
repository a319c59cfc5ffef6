package transfer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

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

	// lock reserves destination paths against other transfers, waiting
	// for one that is still committing them.
	lock func(paths []string) (*heldPaths, error)
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
	// known holds the chunks the plan offered as resumed (verified on
	// disk at planning) that no chunk of this transfer has replaced:
	// until the FileEnd, nothing says the sender's chunks are the same.
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
	held     *heldPaths      // destination paths reserved (server only)
	quotaUse int64           // bytes in use under the root, when a quota applies
	hold     quotaHold       // what this transfer may add, in cfg.book
	spaceH   spaceHold       // what this transfer may still write, in cfg.space

	// For the server's report: file data written, and files committed.
	dataBytes, committed atomic.Int64

	pmu          sync.Mutex
	pending      []*rfile // small files sealed, waiting for one sync and their rename
	pendingBytes int64
}

func newReceiver(cfg recvConfig) *receiver {
	return &receiver{cfg: cfg, dirty: make(map[string]bool)}
}

func (r *receiver) dst(p string) string {
	if r.cfg.dest == "" {
		return p
	}
	return r.cfg.dest + "/" + p
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
	if r.held != nil {
		r.held.release()
		r.held = nil
	}
	r.cfg.book.release(&r.hold)
	r.cfg.space.release(&r.spaceH)
}
