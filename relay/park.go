package relay

import (
	"context"
	"sync"

	"github.com/burrowtun/burrow/mux"
)

// Parking lets the idle directions of splices wait without a goroutine.
//
// A Splice direction whose source has been quiet for burstIdle is parked:
// it is recorded in a table and nothing runs for it until its source may
// have something, when a goroutine is started to carry it on. A server
// holding many idle streams then costs no goroutine, and no goroutine
// stack, per idle stream. Two kinds of source park:
//
//   - a *mux.Stream: the session's connection sees each yamux frame go
//     by, and once yamux has taken in a frame that carries data, a FIN or
//     a reset for a parked stream, it wakes that stream's direction (see
//     mux.Stream.Park);
//   - a TCP connection, on Linux: it is registered, one-shot, with an epoll
//     instance of the Parking's own, waited on by one goroutine for all.
//
// Any other source waits as Splice's directions always do, on a goroutine
// of its own. The zero Parking is not usable; a nil *Parking parks nothing.
type Parking struct {
	mu     sync.Mutex
	groups map[<-chan struct{}]*spliceGroup // splices by the context that ends them
	closed bool

	poll     *poller // started at the first TCP park; nil until then, or if it cannot start
	pollOnce sync.Once

	bufs *sync.Pool // copy buffers of busy directions
}

// NewParking returns a Parking whose splices read a busy direction
// copyBuffer bytes at a time (see mux.Config.CopyBuffer; 0 means
// mux.DefaultCopyBuffer). Close it once every session using it has ended.
func NewParking(copyBuffer int) *Parking {
	p := &Parking{groups: make(map[<-chan struct{}]*spliceGroup), bufs: copyBufs}
	if n := clampCopyBuffer(copyBuffer); n != mux.DefaultCopyBuffer {
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
// that it may once it has changed (a mux.EarlyStream, once answered,
// parks as its stream).
func (p *Parking) parker(src any) (pk parker, later bool) {
	if p == nil {
		return nil, false
	}
	switch c := src.(type) {
	case *mux.EarlyStream:
		st, pending := c.Accepted()
		if st == nil {
			return nil, pending
		}
		return p.parker(st)
	case *mux.Stream:
		return streamParker{c}, false
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
	// park records h, to be woken (h.Wake) once its source may have
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

// streamParker parks a direction reading a mux stream.
type streamParker struct{ st *mux.Stream }

func (sp streamParker) park(h *half) bool { return sp.st.Park(h) }

// ready looks for a frame that came in before the direction was recorded.
func (sp streamParker) ready() bool { return sp.st.Ready() }

func (sp streamParker) unpark(h *half) bool { return sp.st.Unpark(h) }

// spliceGroup is the splices of one context: a single context.AfterFunc
// ends them all, through mux.Teardown, rather than one each.
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
	mux.Teardown(aborts)
}
