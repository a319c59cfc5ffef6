//go:build !linux

package client

import "net"

// peerIsOwner relies on the socket's mode (0600) where the system does
// not report the peer's uid.
func peerIsOwner(net.Conn) error { return nil }
