package server

import (
	"context"
	"net"
	"net/http"
	"time"
)

// HeadDeadline makes hs close every connection that has not delivered a
// complete request head within d of being accepted. d covers the TLS
// handshake and the request headers together: net/http's
// ReadHeaderTimeout alone starts again after the handshake, so a peer
// trickling both could hold a connection for twice as long. Later
// requests on a kept-alive connection are bounded by ReadHeaderTimeout,
// which HeadDeadline sets to d when it is unset.
//
// Call it once, after hs.Handler and hs.ConnContext are set and before
// hs serves.
func HeadDeadline(hs *http.Server, d time.Duration) {
	if hs.ReadHeaderTimeout <= 0 {
		hs.ReadHeaderTimeout = d
	}
	connContext := hs.ConnContext
	hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if connContext != nil {
			ctx = connContext(ctx, c)
		}
		return context.WithValue(ctx, headTimerKey{}, time.AfterFunc(d, func() { c.Close() }))
	}
	next := hs.Handler
	if next == nil {
		next = http.DefaultServeMux
	}
	hs.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t, ok := r.Context().Value(headTimerKey{}).(*time.Timer); ok {
			t.Stop()
		}
		next.ServeHTTP(w, r)
	})
}

// headTimerKey is the context key of the timer that closes a connection
// whose first request head is late.
type headTimerKey struct{}
