// Package httpconn carries a connection over ordinary HTTP requests, for
// the paths where a WebSocket upgrade does not pass: a proxy that removes
// the upgrade, or one that holds whole request or response bodies before
// passing them on (antivirus and DLP proxies, nginx with its buffering on).
// Each end is a [net.Conn], so a session runs over it as over a WebSocket.
//
// Two transports share one opening exchange. The client sends
//
//	POST <path>
//	Burrow-Transport: stream | poll
//	Burrow-Protocol: <the session layer's wire version>
//
// with whatever authenticates it (the caller's business), and the server
// answers 200 with an empty body and
//
//	Burrow-Session: <token, 128 random bits, base64url>
//	Burrow-Hold: <seconds a poll may be held>
//	Burrow-Expiry: <seconds after which an unpolled connection ends>
//
// Every later request names the connection by its token in
// Burrow-Session; a token the server does not know is answered as any
// request that is not a tunnel's.
//
// Streaming ([Stream]) pairs two long requests. The down request
// (Burrow-Stream: down, empty body) is answered 200 with a body that
// never ends while the connection lives: first the byte 0x01, then, once
// the up request has arrived, the byte 0x02, then the server's bytes. The
// up request (Burrow-Stream: up) sends a streamed (chunked) body: the byte
// 0x01, then the client's bytes; the server answers it when the body
// ends, which closes the client's direction. The client waits for both
// marks before it sends anything, each within a probe time scaled to how
// long the opening exchange took: a proxy that holds bodies shows as a
// mark that does not come, told apart from a slow server.
//
// Polling ([Poll]) exchanges short requests, each whole, so that they pass
// a proxy that holds whole bodies. A request (POST, body: up to 1 MiB of
// the client's bytes) carries
//
//	Burrow-Up: <offset of the body in the client's bytes>
//	Burrow-Ack: <how many of the server's bytes the client has>
//	Burrow-Room: <how many of the server's bytes the answer may bring>
//	Burrow-Rewind: 1, when a response was lost (resend from the ack)
//	Burrow-Close: 1, when the client has sent all it will
//
// and its response (body: up to 1 MiB of the server's bytes)
//
//	Burrow-Down: <offset of the body in the server's bytes>
//	Burrow-Received: <how many of the client's bytes the server has>
//	Burrow-Close: 1, when the body ends the server's bytes
//
// The offsets make every exchange idempotent: bytes already had are
// skipped, bytes past a gap are refused and sent again, so a proxy that
// repeats, drops, delays or reorders whole requests loses and duplicates
// nothing. The server keeps its bytes until they are acknowledged. A
// request that brings nothing, while the server has nothing to send, is
// held up to the hold time, so that an idle connection costs a request
// per hold and the server's bytes leave as soon as they are written.
//
// Each end holds at most a window of bytes in each direction; a writer
// waits for room. A polling connection that no request reaches for its
// expiry ends, and its memory is freed.
package httpconn
