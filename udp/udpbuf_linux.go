package udp

import (
	"net"

	"golang.org/x/sys/unix"
)

// growUDPBuffers asks for udpSocketBuffer bytes of kernel buffer each way.
// SO_RCVBUFFORCE passes the system's rmem_max when the process may
// (CAP_NET_ADMIN, as a root service has); otherwise the plain request is
// capped by the kernel.
func growUDPBuffers(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpSocketBuffer) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, udpSocketBuffer)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, udpSocketBuffer) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, udpSocketBuffer)
		}
	})
}
