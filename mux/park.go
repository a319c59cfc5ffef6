package mux

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Parking lets the idle directions of splices wait without a goroutine.
//
// A Splice direction whose source has been quiet for burstIdle is parked:
// it is recorded in a table and nothing runs for it until its source may
// have something, when a goroutine is started to carry it on. A server
// holding many idle streams then costs no goroutine, and no goroutine
// stack, per idle stream. Two kinds of source park:
//
//   - a yamux stream of a session whose Config named this Parking: the
//     session's connection sees each yamux frame go by, and once yamux has
//     taken in a frame that carries data, a FIN or a reset for a parked
//     stream, it wakes that stream's direction (see frameWatch);
//   - a TCP connection, on Linux: it is registered, one-shot, with an epoll
//     instance of the Parking's own, waited on by one goroutine for all.
//
// Any other source waits as Splice's directions always do, on a goroutine
// of its own. The zero Parking is not usable; a nil *Parking parks nothing.
type Parking struct {
	mu       sync.Mutex
	sessions map[*yamux.Session]*frameWatch
	groups   map[<-chan struct{}]*spliceGroup // splices by the context that ends them
	closed   bool

	poll     *poller // started at the first TCP park; nil until then, or if it cannot start
	pollOnce sync.Once

	bufs *sync.Pool // copy buffers of busy directions
}

// NewParking returns a Parking whose splices read a busy direction
// copyBuffer bytes at a time (see Config.CopyBuffer; 0 means
// DefaultCopyBuffer). Close it once every session using it has ended.
func NewParking(copyBuffer int) *Parking {
	p := &Parking{sessions: make(map[*yamux.Session]*frameWatch), groups: make(map[<-chan struct{}]*spliceGroup), bufs: copyBufs}
	if n := clampCopyBuffer(copyBuffer); n != DefaultCopyBuffer {
		p.bufs = newBufPool(n)
	}
	return p
}

// copyBufs returns the pool of p's copy buffers (the default's, for nil).
func (p *Parking) copyBufs() *sync.Pool {
	if p == nil {
		return copyBufs
	}
	return p.bufs
}

// Close stops the TCP poller, if it started, and waits for it. Directions
// parked on sockets are woken to go on on goroutines of their own; those
// parked on streams are left to their sessions' ends, which wake them.
func (p *Parking) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.pollOnce.Do(func() {}) // waits for a poller starting meanwhile; none starts after
	p.mu.Lock()
	poll := p.poll
	p.mu.Unlock()
	if poll != nil {
		return poll.close()
	}
	return nil
}

// addSession makes sess's streams parkable, through w, until sess ends.
func (p *Parking) addSession(sess *yamux.Session, w *frameWatch) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.sessions[sess] = w
	}
}

func (p *Parking) removeSession(sess *yamux.Session) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.sessions, sess)
}

// poller returns the TCP poller, starting it on first use; nil when the
// platform has none or it could not start.
func (p *Parking) poller() *poller {
	p.pollOnce.Do(func() {
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
		// A poller that cannot start (no epoll) leaves sockets to wait
		// on goroutines, as they do without a Parking.
		poll, _ := newPoller()
		p.mu.Lock()
		p.poll = poll
		p.mu.Unlock()
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.poll
}

// parker returns how src parks, or nil when it cannot; later reports
// that it may once it has changed (an EarlyStream, once answered, parks
// as its yamux stream).
func (p *Parking) parker(src any) (pk parker, later bool) {
	if p == nil {
		return nil, false
	}
	switch c := src.(type) {
	case *EarlyStream:
		st := c.answered()
		if st == nil {
			return nil, !c.failed()
		}
		return p.parker(st)
	case *yamux.Stream:
		p.mu.Lock()
		w := p.sessions[c.Session()]
		p.mu.Unlock()
		if w == nil {
			return nil, false
		}
		return &streamParker{w: w, st: c}, false
	default:
		poll := p.poller()
		if poll == nil {
			return nil, false
		}
		return poll.parker(src), false
	}
}

// parker parks one direction of a splice on its source.
type parker interface {
	// park records h, to be woken (h.wake) once its source may have
	// something to read. It reports false when h was not recorded, or
	// was taken back at once, by park itself.
	park(h *half) bool
	// ready reports whether h's source has something already (a parker
	// told of what comes later, as epoll is, says false).
	ready() bool
	// unpark takes h back; it reports whether h was parked, in which case
	// the caller now carries it on.
	unpark(h *half) bool
}

// streamParker parks a direction reading a yamux stream.
type streamParker struct {
	w  *frameWatch
	st *yamux.Stream
}

func (sp *streamParker) park(h *half) bool {
	if !sp.w.add(sp.st.StreamID(), h) {
		return false
	}
	// An idle stream gives back its receive buffer: yamux keeps it at the
	// size of the largest burst otherwise.
	sp.st.Shrink()
	return true
}

// ready looks for a frame that came in before the direction was recorded.
func (sp *streamParker) ready() bool { return streamReady(sp.st) }

func (sp *streamParker) unpark(h *half) bool {
	return sp.w.remove(sp.st.StreamID(), h)
}

// streamReady reports whether a read of st would not block: data is
// buffered, or the stream has ended or failed.
func streamReady(st *yamux.Stream) bool {
	st.SetReadDeadline(time.Unix(1, 0))
	_, err := st.Read(nil)
	st.SetReadDeadline(time.Time{})
	return !errors.Is(err, yamux.ErrTimeout)
}

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
	parked  map[uint32]waker
	closed  bool
}

// waker is a parked direction: a *half. wake carries it on on a new
// goroutine, carryOn on the caller's.
type waker interface {
	wake()
	carryOn()
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
func (w *frameWatch) add(id uint32, h waker) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	if w.parked == nil {
		w.parked = make(map[uint32]waker)
	}
	w.parked[id] = h
	w.nparked.Store(int32(len(w.parked)))
	return true
}

// remove takes h back from stream id; it reports whether h was there.
func (w *frameWatch) remove(id uint32, h waker) bool {
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
		h.wake()
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
		wakes = append(wakes, h.carryOn)
	}
	go teardown(wakes)
}

// A session's end, or its context's, ends all its streams' splices at
// once: thousands, on a server. Each then takes a few tens of microseconds
// (closing its sockets, its done callback), and started all on goroutines
// of their own they would queue that much work at once ahead of every
// other goroutine of the process: another user's round trip, /healthz and
// new logins waited behind 16,384 of them for most of a second. teardown
// runs them at most teardownParallel at a time instead, so that the
// others' goroutines interleave with the work. One still running after
// teardownStall, blocked rather than busy (a write to a peer that does not
// read, until the splice's ends are closed), stops counting against the
// bound, so none waits for it.
const (
	teardownParallel = 8
	teardownStall    = 2 * time.Millisecond
)

// teardown runs each of fs on a goroutine of its own, at most
// teardownParallel at once, and returns once the last has started.
func teardown(fs []func()) {
	slots := make(chan struct{}, teardownParallel)
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

// spliceGroup is the splices of one context: a single context.AfterFunc
// ends them all, through teardown, rather than one each.
type spliceGroup struct {
	splices map[*splice]struct{}
	stop    func() bool // the group's AfterFunc
}

// join makes the end of ctx abort s, and returns what takes s back out
// once it has ended by itself.
func (p *Parking) join(ctx context.Context, s *splice) (leave func()) {
	done := ctx.Done()
	if done == nil {
		return func() {} // ctx never ends
	}
	if p == nil {
		stop := context.AfterFunc(ctx, s.abort)
		return func() { stop() }
	}
	p.mu.Lock()
	g := p.groups[done]
	if g == nil {
		g = &spliceGroup{splices: make(map[*splice]struct{})}
		p.groups[done] = g
		g.stop = context.AfterFunc(ctx, func() { p.abortGroup(done, g) })
	}
	g.splices[s] = struct{}{}
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(g.splices, s)
		if len(g.splices) == 0 && p.groups[done] == g {
			delete(p.groups, done)
			g.stop()
		}
	}
}

// abortGroup aborts the splices of g, whose context has ended.
func (p *Parking) abortGroup(done <-chan struct{}, g *spliceGroup) {
	p.mu.Lock()
	if p.groups[done] == g {
		delete(p.groups, done)
	}
	aborts := make([]func(), 0, len(g.splices))
	for s := range g.splices {
		aborts = append(aborts, s.abort)
	}
	g.splices = nil // leave finds nothing more to take out
	p.mu.Unlock()
	teardown(aborts)
}
