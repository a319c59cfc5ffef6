// Package inner runs a Burrow session end to end through a party that terminates the outer TLS, such as a
// TLS-inspecting proxy: a TLS 1.3 connection inside the outer connection, authenticated by the server's key
// that the client pins, and a login carried inside it, so that the party in the middle sees neither the
// credentials nor any byte of the session.
//
// The client asks for it on the WebSocket upgrade with the request header "Burrow-Inner: 1" and without
// credentials; a server that offers it answers the upgrade (101) with the same header.
//
// Client and Server each take the outer connection (the WebSocket connection, as a net.Conn) once the
// upgrade is done and return the inner connection, on which the session runs as it would on the outer one.
// Inside the inner TLS 1.3 connection (ALPN "burrow-inner.1") the client first writes its login and the
// server answers with a verdict; all integers are big endian:
//
//	login:   version (1) | user length (1 byte, 1-64) | user | password length (2 bytes, <= 1024) | password
//	verdict: status (1 byte: 0 ok, 1 denied, 2 rate limited, 3 busy) | retry after, seconds (4 bytes) |
//	         message length (2 bytes, <= 1024) | message
//
// After a verdict of 0 the connection carries the session. ReadLogin and ReadVerdict refuse, before
// allocating, anything longer than the limits.
package inner
