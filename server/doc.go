// Package server is the server end of a Burrow tunnel.
//
// A [Server] is an [http.Handler]: it authenticates the upgrade request
// (HTTP Basic over TLS, checked against hashed passwords), upgrades it to
// a WebSocket carrying one yamux session (package mux), and serves the
// streams the client opens, each checked against the user's allow list.
// The caller owns the listener and the http.Server, so the handler can sit
// behind any TLS setup or share a port with other handlers.
package server
