// Package socks is the SOCKS5 server of a listening end (RFC 1928, with
// RFC 1929 username and password authentication): [Handshake] reads a
// client's CONNECT request, whose target then travels to the far end in
// a mux.KindTCP stream header, and [Reply] answers it with the far end's
// verdict. [WriteBindAuth] and [ReadBindAuth] carry the credentials a
// reverse SOCKS listener must require over its bind stream.
package socks
