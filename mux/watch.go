package mux

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// yamux frame types and flags (yamux spec.md) that concern a reader.
const (
	yamuxTypeWindowUpdate = 1
	yamuxFlagFIN          = 4
	yamuxFlagRST          = 8
)

// frameWatch follows the yamux frames a session's connection reads, to
// wake the parked directions their streams' frames concern.
//
// yamux reads its connection through a bufio.Reader, in one goroutine
// that handles each frame before it reads the next. wsConn.Read never
// returns bytes of two frames at once, so the bufio.Reader never holds
// the next frame's bytes while yamux is handling one, and when Read is
// called for a frame's first bytes, yamux has finished with the frame
// before: its data is in the stream's buffer, its FIN or reset recorded.
// That is when the frame's stream is woken. A direction records itself
// as parked first and then looks at its stream, so a frame is either seen
// by that look or wakes it afterwards: none is missed.
type frameWatch struct {
	// Read's own: the frame being read.
	hdr    [yamuxHeaderSize]byte
	hn     int    // header bytes read
	body   uint32 // body bytes still to read
	wakeID uint32 // the frame being read concerns a reader of this stream

	nparked atomic.Int32 // len(parked), read without the lock
	mu      sync.Mutex
	parked  map[uint32]Waker
	closed  bool
}

// limit cuts p so that a read into it ends at the current frame's end,
// after waking the stream the frame before concerned.
func (w *frameWatch) limit(p []byte) []byte {
	if w.wakeID != 0 && w.hn == 0 {
		w.wake(w.wakeID)
		w.wakeID = 0
	}
	if w.hn < yamuxHeaderSize {
		return p[:min(len(p), yamuxHeaderSize-w.hn)]
	}
	return p[:min(uint32(len(p)), w.body)]
}

// advance takes note of b, read into the slice limit returned.
func (w *frameWatch) advance(b []byte) {
	if len(b) == 0 {
		return
	}
	if w.hn < yamuxHeaderSize {
		w.hn += copy(w.hdr[w.hn:], b)
		if w.hn < yamuxHeaderSize {
			return
		}
		typ, flags := w.hdr[1], binary.BigEndian.Uint16(w.hdr[2:])
		id, length := binary.BigEndian.Uint32(w.hdr[4:]), binary.BigEndian.Uint32(w.hdr[8:])
		if typ == yamuxTypeData {
			w.body = length
		}
		if (typ == yamuxTypeData && length > 0) ||
			((typ == yamuxTypeData || typ == yamuxTypeWindowUpdate) && flags&(yamuxFlagFIN|yamuxFlagRST) != 0) {
			w.wakeID = id
		}
	} else {
		w.body -= uint32(len(b))
	}
	if w.body == 0 {
		w.hn = 0 // the frame is whole: the next bytes start a header
	}
}

// add records h as parked on stream id; false once the connection has
// ended.
func (w *frameWatch) add(id uint32, h Waker) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	if w.parked == nil {
		w.parked = make(map[uint32]Waker)
	}
	w.parked[id] = h
	w.nparked.Store(int32(len(w.parked)))
	return true
}

// remove takes h back from stream id; it reports whether h was there.
func (w *frameWatch) remove(id uint32, h Waker) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.parked[id] != h {
		return false
	}
	delete(w.parked, id)
	w.nparked.Store(int32(len(w.parked)))
	return true
}

// wake wakes the direction parked on stream id, if any.
func (w *frameWatch) wake(id uint32) {
	if w.nparked.Load() == 0 {
		return
	}
	w.mu.Lock()
	h := w.parked[id]
	if h != nil {
		delete(w.parked, id)
		w.nparked.Store(int32(len(w.parked)))
	}
	w.mu.Unlock()
	if h != nil {
		h.Wake()
	}
}

// close wakes every parked direction, once the connection has ended: their
// streams end with it, all at once, so they are carried on through
// teardown, on a goroutine of close's own. No direction parks afterwards.
func (w *frameWatch) close() {
	w.mu.Lock()
	parked := w.parked
	w.parked, w.closed = nil, true
	w.nparked.Store(0)
	w.mu.Unlock()
	if len(parked) == 0 {
		return
	}
	wakes := make([]func(), 0, len(parked))
	for _, h := range parked {
		wakes = append(wakes, h.CarryOn)
	}
	go Teardown(wakes)
}

// A session's end, or its context's, ends all its streams' splices at
// once: thousands, on a server. Each then takes a few tens of microseconds
// (closing its sockets, its done callback), and started all on goroutines
// of their own they would queue that much work at once ahead of every
// other goroutine of the process: another user's round trip, /healthz and
// new logins waited behind 16,384 of them for most of a second. teardown
// runs them at most TeardownParallel at a time instead, so that the
// others' goroutines interleave with the work. One still running after
// teardownStall, blocked rather than busy (a write to a peer that does not
// read, until the splice's ends are closed), stops counting against the
// bound, so none waits for it.
const (
	// TeardownParallel bounds the ends Teardown runs at once.
	TeardownParallel = 8
	teardownStall    = 2 * time.Millisecond
)

// Teardown runs each of fs on a goroutine of its own, at most
// TeardownParallel at once, and returns once the last has started. It is
// how the end of many streams at once is paced, here (parked directions
// woken when a connection ends) and in package relay (splices aborted
// when their session's context ends).
func Teardown(fs []func()) {
	slots := make(chan struct{}, TeardownParallel)
	stall := time.NewTimer(teardownStall)
	defer stall.Stop()
	for _, f := range fs {
		counted := true
		select {
		case slots <- struct{}{}:
		default:
			stall.Reset(teardownStall)
			select {
			case slots <- struct{}{}:
			case <-stall.C:
				counted = false
			}
		}
		go func() {
			f()
			if counted {
				<-slots
			}
		}()
	}
}
