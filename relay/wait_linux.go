package relay

import (
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// waitConn waits for a TCP or Unix stream socket to be readable, through
// the runtime's poller, with no buffer: it peeks at one byte, which tells
// data from EOF and from an error. The peek consumes a pending error (a
// reset), so the error is returned here: a later Read would see only EOF.
// waited is false for any other source.
func waitConn(src io.Reader) (waited bool, err error) {
	var sc syscall.Conn
	switch c := src.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		if !unixStream(c) {
			return false, nil // a datagram socket: an empty datagram is no EOF
		}
		sc = c
	default:
		return false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, nil
	}
	var peekErr error
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false // the poller waits for readability, then calls again
			case err != nil:
				peekErr = os.NewSyscallError("recvfrom", err)
			case n == 0:
				peekErr = io.EOF
			}
			return true
		}
	})
	if err != nil {
		return true, err
	}
	return true, peekErr
}

func unixStream(c *net.UnixConn) bool {
	a, ok := c.LocalAddr().(*net.UnixAddr)
	if !ok {
		a, ok = c.RemoteAddr().(*net.UnixAddr)
	}
	return ok && a.Net == "unix"
}
