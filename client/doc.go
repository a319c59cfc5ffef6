// Package client is the client end of a Burrow tunnel.
//
// A [Client] binds the local listeners of its remotes, opens one
// authenticated WebSocket-over-TLS session to the server (package mux) and
// carries every accepted connection over it as a yamux stream. When the
// session dies the listeners stay bound and the client reconnects with
// exponential backoff and jitter; connections that arrive meanwhile wait
// for the new session.
package client
