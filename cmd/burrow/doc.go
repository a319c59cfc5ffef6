// Command burrow carries TCP connections and files through networks that
// allow only HTTPS: one authenticated WebSocket-over-TLS connection,
// multiplexed with yamux.
//
// This package is flag parsing and wiring only; the work is done by the
// client, daemon, server, mux, relay, socks, udp, transfer, progress and
// certs packages.
package main
