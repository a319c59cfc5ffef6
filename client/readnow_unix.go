//go:build unix

package client

import (
	"errors"
	"net"
	"syscall"
)

// readNow reads into buf what conn has already received, without waiting
// for more: nothing (0, nil) when no bytes have arrived, at EOF, or when
// conn is not a socket it can read so.
func readNow(conn net.Conn, buf []byte) (int, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, nil
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), buf)
		return true // done either way: never wait
	})
	switch {
	case err != nil:
		return 0, err
	case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EWOULDBLOCK), errors.Is(rerr, syscall.EINTR):
		return 0, nil
	case rerr != nil:
		return 0, rerr
	}
	return n, nil
}
