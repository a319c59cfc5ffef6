// Package udp relays datagrams over streams, for both ends: a [Listener]
// serves a local UDP socket and carries each source address's flow over
// a stream of its own, and [Serve] answers such a stream on the far side
// with a socket to the target. On a stream each datagram, of at most
// [MaxDatagram] bytes, is one frame: its length (2 bytes, big endian) and
// then its payload.
package udp
