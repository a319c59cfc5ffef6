// Package mux is Burrow's wire protocol and session layer.
//
// One WebSocket connection (subprotocol [Subprotocol], binary messages) is
// wrapped as a [net.Conn] and carries one yamux session. A yamux frame's
// header and body travel as one WebSocket message, written from yamux's
// send loop itself, and the TLS records of a message reach the kernel in
// one write (see [CoalesceWrites]). Every yamux stream starts with a small versioned [Header] naming
// what the opener wants (a TCP connection to a target, for instance); the
// accepting side answers with a reply ([WriteReply], [ReadReply]) before
// any payload flows back. [Open] waits for the reply before the opener's
// payload too; an [EarlyStream] sends payload right behind the header.
//
// The package holds no policy: authentication, access control and what a
// stream is connected to are decided by the server and client packages.
// The byte layout is described in docs/protocol.md.
package mux
