// Package mux is Burrow's wire protocol and session layer: it carries a
// tunnel's streams, as a [Session] of [Stream]s, over one WebSocket
// connection, and defines the stream header and reply each stream starts
// with and the wire version both ends must agree on.
//
// One WebSocket connection (subprotocol [Subprotocol], binary messages) is
// wrapped as a [net.Conn] and carries one yamux session, which [Dial] and
// [Accept] hand out as a [Session]; client and server never see yamux. Every
// stream starts with a small versioned [Header] naming what the opener
// wants (a TCP connection to a target, for instance); the accepting side
// answers with a reply ([WriteReply], [ReadReply]) before any payload
// flows back. [Open] waits for the reply before the opener's
// payload too; an [EarlyStream] sends payload right behind the header.
//
// # Data path
//
// Written from yamux's send loop itself, with no queue or goroutine of
// its own, a frame's header and body travel as one WebSocket message;
// small frames waiting in yamux's send queue behind each other share one
// (wsConn), and the TLS records of a message reach the kernel in one
// write (see [CoalesceWrites]). Each byte sent is copied by yamux into
// its send buffer, by the WebSocket library when it masks (client) or
// buffers a frame's start (server), on a client once more to join the
// library's 4 KiB pieces into full TLS records (corkBody), sealed by TLS
// into its record buffer and copied once more into the corked write, one
// memcpy instead of a syscall per TLS record. Received, it is opened by TLS, read through
// the WebSocket library's buffer (and unmasked, server), copied into
// yamux's stream buffer and out to the splice's buffer. Buffers come from
// pools and go back when a direction idles (relay.Parking, which parks a
// reader on a stream through [Stream.Park]): wsConn allocates
// nothing per message (TestWSConnNoAllocs); the allocations left per
// frame are yamux's and crypto/tls's. The benchmarks in session_test.go
// measure all of it against plain TLS and TCP (-benchmem).
//
// What a stream is connected to, and how, is not mux's: package relay
// splices a stream to a socket, socks and udp serve SOCKS5 and datagrams
// over streams, and authentication and access control are decided by
// the server and client packages. The byte layout is described in
// docs/protocol.md.
package mux
