// Package mux is Burrow's wire protocol and session layer.
//
// One WebSocket connection (subprotocol [Subprotocol], binary messages) is
// wrapped as a [net.Conn] and carries one yamux session. Writes from yamux
// are coalesced so that a frame header and its body, and bursts of small
// frames, travel as one WebSocket message and one TLS record rather than
// many. Every yamux stream starts with a small versioned [Header] naming
// what the opener wants (a TCP connection to a target, for instance); the
// accepting side answers with a reply ([WriteReply], [ReadReply]) before
// any payload flows back. [Open] waits for the reply before the opener's
// payload too; an [EarlyStream] sends payload right behind the header.
//
// The package holds no policy: authentication, access control and what a
// stream is connected to are decided by the server and client packages.
// The byte layout is described in docs/protocol.md.
package mux
