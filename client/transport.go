package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/httpconn"
	"github.com/burrowtun/burrow/mux"
)

// Transport is what the session's bytes travel in to the server.
type Transport int

const (
	// TransportAuto tries WebSocket, then HTTP streaming, then HTTP
	// polling, and keeps to the first that works.
	TransportAuto Transport = iota
	// TransportWebSocket is one WebSocket connection.
	TransportWebSocket
	// TransportStream is two long streamed HTTP requests, one each way.
	TransportStream
	// TransportPoll is short whole HTTP exchanges, which pass proxies that
	// hold whole bodies.
	TransportPoll
)

// ParseTransport reads the --transport value: auto, websocket, stream or
// poll.
func ParseTransport(s string) (Transport, error) {
	switch s {
	case "", "auto":
		return TransportAuto, nil
	case "websocket", "ws":
		return TransportWebSocket, nil
	case "stream":
		return TransportStream, nil
	case "poll":
		return TransportPoll, nil
	}
	return 0, fmt.Errorf("--transport %q: want auto, websocket, stream (HTTP streaming) or poll (HTTP polling)", s)
}

func (t Transport) String() string {
	switch t {
	case TransportWebSocket:
		return "websocket"
	case TransportStream:
		return "stream"
	case TransportPoll:
		return "poll"
	}
	return "auto"
}

// describe names t for a log line.
func (t Transport) describe() string {
	switch t {
	case TransportStream:
		return "HTTP streaming"
	case TransportPoll:
		return "HTTP polling"
	}
	return "WebSocket"
}

// connect opens a session over the transport the configuration asks for;
// on auto, over the one that worked last, or else the first of WebSocket,
// HTTP streaming and HTTP polling that gets through, saying once why it
// is not WebSocket.
func (c *Client) connect(ctx context.Context) (*mux.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	if c.cfg.Transport != TransportAuto {
		return c.connectOver(ctx, c.cfg.Transport)
	}
	c.mu.Lock()
	t := c.worked
	c.mu.Unlock()
	if t == TransportAuto {
		if t = c.remembered(); t != TransportAuto {
			c.log.Info("using "+t.describe()+", as the last connection on this path did", "transport", t.String(), "recorded", c.cfg.TransportMemory)
		} else {
			t = TransportWebSocket
		}
	}
	known := t
	for {
		sess, err := c.connectOver(ctx, t)
		if err == nil {
			c.mu.Lock()
			c.worked = t
			c.mu.Unlock()
			if t != known {
				c.remember(t)
			}
			return sess, nil
		}
		why := fallback(t, err)
		if why == "" || t == TransportPoll {
			return nil, err
		}
		t++
		c.log.Info(why+"; using "+t.describe(), "transport", t.String(), "server", c.cfg.URL)
	}
}

// fallback says why the next transport is worth a try after t failed
// with err, or "" when it is not (the same would happen over it).
func fallback(t Transport, err error) string {
	var removed *upgradeRemovedError
	var be *httpconn.BufferedError
	var he *mux.HandshakeError
	switch {
	case t == TransportWebSocket && errors.As(err, &removed):
		return removed.fact()
	case t == TransportWebSocket && errors.As(err, &he) && refusedOnTheWay(he.StatusCode):
		return fmt.Sprintf("the WebSocket upgrade was refused on the way (HTTP %d)", he.StatusCode)
	case t == TransportStream && errors.As(err, &be):
		return be.Error()
	case t == TransportStream && errors.As(err, &he) && refusedOnTheWay(he.StatusCode):
		return fmt.Sprintf("a streamed request was refused on the way (HTTP %d)", he.StatusCode)
	}
	return ""
}

// refusedOnTheWay reports whether status, answering a tunnel request, is
// one a proxy gives for what it does not pass, rather than the server's
// verdict on the login.
func refusedOnTheWay(status int) bool {
	switch status {
	case http.StatusForbidden, http.StatusMethodNotAllowed, http.StatusLengthRequired,
		http.StatusNotImplemented, http.StatusBadGateway:
		return true
	}
	return false
}

// connectOver opens a session over t.
func (c *Client) connectOver(ctx context.Context, t Transport) (*mux.Session, error) {
	conn, err := c.dialTLS(ctx)
	if err != nil {
		return nil, c.explain(err)
	}
	cs := conn.ConnectionState()
	if verr := certs.Verify(c.outer, cs); verr != nil {
		return c.connectInspected(ctx, conn, t, verr)
	}
	if certs.VouchedByCA(c.outer, cs) {
		return c.connectBound(ctx, conn, t)
	}
	return c.upgrade(ctx, conn, t)
}

// carry opens the connection the session runs on, over t, starting on
// conn, with header on the request that opens it; it returns the headers
// of the server's answer.
func (c *Client) carry(ctx context.Context, conn *tls.Conn, t Transport, header http.Header) (net.Conn, http.Header, error) {
	if t == TransportWebSocket {
		ws, answer, err := mux.DialWebSocket(ctx, c.cfg.URL, &mux.DialOptions{HTTPClient: oneConn(conn), Header: header, Host: header.Get("Host")})
		if err != nil {
			conn.Close()
		}
		return ws, answer, err
	}
	mode := httpconn.Stream
	if t == TransportPoll {
		mode = httpconn.Poll
	}
	hc := c.sameServer(conn)
	hc.Timeout = 0
	hconn, answer, err := httpconn.Dial(ctx, httpURL(c.cfg.URL), mode, &httpconn.DialOptions{
		HTTPClient: hc, Header: header, Protocol: mux.Subprotocol,
	})
	if err != nil {
		hc.CloseIdleConnections()
		var re *httpconn.ResponseError
		if errors.As(err, &re) {
			err = mux.Refusal(re.Response)
		}
		return nil, nil, err
	}
	return hconn, answer, nil
}

// httpURL is the https (or http) URL of a wss (ws) one.
func httpURL(u string) string {
	switch {
	case strings.HasPrefix(u, "wss://"):
		return "https://" + strings.TrimPrefix(u, "wss://")
	case strings.HasPrefix(u, "ws://"):
		return "http://" + strings.TrimPrefix(u, "ws://")
	}
	return u
}

// sameServer is an http.Client whose first request goes over first, and
// every later one over a new connection to the server that shows the
// certificate first showed, which the client has judged already.
func (c *Client) sameServer(first *tls.Conn) *http.Client {
	var once sync.Once
	want := first.ConnectionState().PeerCertificates[0].Raw
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var conn *tls.Conn
			once.Do(func() { conn = first })
			if conn != nil {
				return conn, nil
			}
			conn, err := c.dialTLS(ctx)
			if err != nil {
				return nil, err
			}
			if got := conn.ConnectionState().PeerCertificates; len(got) == 0 || !bytes.Equal(got[0].Raw, want) {
				conn.Close()
				return nil, errors.New("the server showed another certificate on a new connection")
			}
			return conn, nil
		},
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1: the streams flush as they go
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: tr}
}
