//go:build !linux

package udp

import "net"

// growUDPBuffers asks for udpSocketBuffer bytes of kernel buffer each way.
func growUDPBuffers(c *net.UDPConn) {
	c.SetReadBuffer(udpSocketBuffer)
	c.SetWriteBuffer(udpSocketBuffer)
}
