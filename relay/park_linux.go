package relay

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller parks directions reading TCP connections: each is registered
// one-shot with an epoll instance of the poller's own, and one goroutine
// waits on it for all of them. The runtime's own poller has the same
// sockets registered too; epoll allows that.
//
// Each park records its direction under a token of its own, which its
// epoll registration carries back, never under the socket's descriptor: a
// descriptor's number is reused as soon as the socket is closed, possibly
// by another splice parking at the same moment. An event may still come
// late, for a direction already woken or taken back and parked again
// under a new token: it finds nothing, or, once tokens have wrapped
// around, wakes a direction with nothing to read, which then waits on a
// goroutine as an unparked direction does.
type poller struct {
	epfd, evfd int
	done       chan struct{}

	mu     sync.Mutex
	parked map[uint32]*half // by token
	token  uint32           // the last token handed out
	closed bool             // set by loop as it ends: no more parks

	closeOnce sync.Once
	closeErr  error
}

// evToken is the token of the eventfd that stops the loop; parks never
// get it.
const evToken = 0

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: evToken}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	p := &poller{epfd: epfd, evfd: evfd, done: make(chan struct{}), parked: make(map[uint32]*half)}
	go p.loop()
	return p, nil
}

// loop wakes the directions whose sockets became readable (or hung up,
// or failed) until close. When it ends, for close or because epoll
// failed, it wakes every direction still parked, to go on on goroutines
// of their own, and refuses parks from then on.
func (p *poller) loop() {
	defer close(p.done)
	defer func() {
		p.mu.Lock()
		parked := p.parked
		p.parked, p.closed = map[uint32]*half{}, true
		p.mu.Unlock()
		for _, h := range parked {
			h.Wake()
		}
	}()
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		stop := false
		for _, ev := range events[:n] {
			token := uint32(ev.Fd)
			if token == evToken {
				stop = true
				continue
			}
			p.mu.Lock()
			h := p.parked[token]
			delete(p.parked, token)
			p.mu.Unlock()
			if h != nil {
				h.Wake()
			}
		}
		if stop {
			return
		}
	}
}

// close stops loop, which wakes the directions still parked, waits for
// it and releases the epoll instance. It is safe to call more than once.
func (p *poller) close() error {
	p.closeOnce.Do(func() {
		one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
		if _, err := unix.Write(p.evfd, one); err != nil {
			p.closeErr = os.NewSyscallError("write", err)
			return
		}
		<-p.done
		p.closeErr = errors.Join(unix.Close(p.epfd), unix.Close(p.evfd))
	})
	return p.closeErr
}

// parker returns how src parks: a TCP connection parks on p.
func (p *poller) parker(src any) parker {
	c, ok := src.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	return &connParker{p: p, rc: rc}
}

// connParker parks a direction reading a TCP connection.
type connParker struct {
	p     *poller
	rc    syscall.RawConn
	token uint32      // the current park's; guarded by p.mu
	added atomic.Bool // registered with the epoll instance (disarmed after an event)
}

func (cp *connParker) park(h *half) bool {
	p := cp.p
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	// A token not in use: the counter wraps around after 2^32 parks, past
	// directions that may still be parked.
	for {
		if p.token++; p.token != evToken && p.parked[p.token] == nil {
			break
		}
	}
	token := p.token
	cp.token = token
	p.parked[token] = h
	p.mu.Unlock()
	// Level-triggered: a socket that is readable already reports so at
	// once, so data that came before the registration is not missed. A
	// closed socket fails Control: it cannot be registered by mistake
	// under the number of another.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(token)}
	var ctlErr error
	err := cp.rc.Control(func(fd uintptr) {
		op := unix.EPOLL_CTL_MOD
		if !cp.added.Swap(true) {
			op = unix.EPOLL_CTL_ADD
		}
		ctlErr = unix.EpollCtl(p.epfd, op, int(fd), &ev)
		switch ctlErr {
		case unix.EEXIST: // out of step with the kernel: the other operation
			ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		case unix.ENOENT:
			ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err == nil && ctlErr == nil {
		return true
	}
	// The socket is closed or cannot be watched: h goes on unparked,
	// unless a wake took it meanwhile.
	return !cp.unpark(h)
}

// ready is false: epoll reports a socket readable already at once.
func (cp *connParker) ready() bool { return false }

func (cp *connParker) unpark(h *half) bool {
	p := cp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked[cp.token] != h {
		return false
	}
	delete(p.parked, cp.token)
	return true
}

// count is how many directions are parked on p.
func (p *poller) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}
