// Package daemon runs a Burrow server as a long-lived process: it binds
// the tunnel listener (and the operator's admin listener with /healthz,
// /readyz, /metrics and /status), loads the certificate and the users
// file, reloads both on request and the certificate when its files
// change, keeps a gauge of the certificate's expiry, forwards every
// non-tunnel request to a --backend website, and on shutdown stops taking
// sessions and waits for the streams in flight.
//
// The tunnel itself is package server's http.Handler; daemon is what
// listens for it. Command burrow maps its flags into a Config and calls
// Run.
package daemon
