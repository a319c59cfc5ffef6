package mux

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
// Parked directions are found by file descriptor: a descriptor names one
// open socket at a time, and a splice takes its direction back (unpark)
// before it closes the socket, so an entry never outlives its socket. An
// event may still come late, for a direction already woken or taken back
// and parked again: a wake-up with nothing to read costs a goroutine that
// waits as an unparked direction does, nothing more.
type poller struct {
	epfd, evfd int
	done       chan struct{}

	mu     sync.Mutex
	parked map[int32]*half
	closed bool
}

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
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	p := &poller{epfd: epfd, evfd: evfd, done: make(chan struct{}), parked: make(map[int32]*half)}
	go p.loop()
	return p, nil
}

// loop wakes the directions whose sockets became readable (or hung up,
// or failed) until close.
func (p *poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == int32(p.evfd) {
				return
			}
			p.mu.Lock()
			h := p.parked[ev.Fd]
			delete(p.parked, ev.Fd)
			p.mu.Unlock()
			if h != nil {
				h.wake()
			}
		}
	}
}

// close stops loop and waits for it. Directions still parked stay so
// until their splices take them back.
func (p *poller) close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if _, err := unix.Write(p.evfd, one); err != nil {
		return os.NewSyscallError("write", err)
	}
	<-p.done
	return errors.Join(unix.Close(p.epfd), unix.Close(p.evfd))
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
	fd := -1
	if rc.Control(func(f uintptr) { fd = int(f) }) != nil || fd < 0 {
		return nil
	}
	return &connParker{p: p, rc: rc, fd: int32(fd)}
}

// connParker parks a direction reading a TCP connection.
type connParker struct {
	p     *poller
	rc    syscall.RawConn
	fd    int32
	added atomic.Bool // registered with the epoll instance (disarmed after an event)
}

func (cp *connParker) park(h *half) bool {
	p := cp.p
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.parked[cp.fd] = h
	p.mu.Unlock()
	// Level-triggered: a socket that is readable already reports so at
	// once, so data that came before the registration is not missed.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: cp.fd}
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
	// unless an event took it meanwhile.
	return !cp.unpark(h)
}

// ready is false: epoll reports a socket readable already at once.
func (cp *connParker) ready() bool { return false }

func (cp *connParker) unpark(h *half) bool {
	p := cp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked[cp.fd] != h {
		return false
	}
	delete(p.parked, cp.fd)
	return true
}

// count is how many directions are parked on p.
func (p *poller) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}
