package client

import (
	"context"
	"github.com/burrowtun/burrow/udp"
	"net"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// serveStream answers a stream the server opened for a reverse remote,
// and calls release once it has ended. The client dials only what its
// own remotes name: a KindReverseTCP or KindReverseUDP stream names the
// bind address, and the client dials that remote's target; a KindTCP
// stream (from an R:socks listener) is served only when an R:socks remote
// was asked for. A TCP stream, once answered, is carried by a splice that
// parks while idle: this goroutine ends.
func (c *Client) serveStream(ctx context.Context, st *mux.Stream, release func()) {
	spliced := false
	defer func() {
		if !spliced {
			release()
		}
	}()
	h, err := mux.ReadHeaderTimeout(st, c.cfg.OpenTimeout)
	if err != nil {
		st.Close()
		return
	}
	log := c.log.With("stream", st.StreamID(), "kind", h.Kind.String(), "target", h.Target)
	refuse := func(err error) {
		log.Warn("reverse stream refused", "err", err)
		mux.WriteReply(st, err)
		st.Close()
	}
	dialer := &net.Dialer{Timeout: c.cfg.DialTimeout}
	start := time.Now()
	spliceTCP := func(target string, logArgs ...any) {
		err := c.parking.SpliceTCP(ctx, st, dialer.DialContext, target, c.cfg.DialTimeout,
			func() { log.Info("reverse stream opened", logArgs...) },
			func(sent, received int64) {
				log.Info("reverse stream closed", append(logArgs, "bytes_out", sent, "bytes_in", received,
					"duration", time.Since(start).Round(time.Millisecond))...)
				release()
			})
		if err != nil {
			log.Warn("reverse stream refused", "err", err)
			return
		}
		spliced = true
	}
	switch h.Kind {
	case mux.KindReverseTCP, mux.KindReverseUDP:
		proto := "tcp"
		if h.Kind == mux.KindReverseUDP {
			proto = "udp"
		}
		r, ok := c.reverseRemote(h.Target, proto)
		if !ok {
			refuse(mux.Refuse(mux.CodeDenied, "the client has no reverse remote %s/%s", h.Target, proto))
			return
		}
		if proto == "udp" {
			stats, err := udp.Serve(ctx, st, dialer.DialContext, r.RemoteAddr(), c.cfg.UDPIdle, c.cfg.DialTimeout)
			if err != nil {
				log.Warn("reverse stream refused", "err", err)
				return
			}
			log.Info("reverse udp flow closed", "remote", r.RemoteAddr(), "datagrams_out", stats.Sent,
				"datagrams_in", stats.Received, "dropped", stats.Dropped)
			return
		}
		spliceTCP(r.RemoteAddr(), "remote", r.RemoteAddr())
	case mux.KindTCP:
		if !c.hasReverseSOCKS() {
			refuse(mux.Refuse(mux.CodeDenied, "the client has no R:socks remote"))
			return
		}
		spliceTCP(h.Target)
	default:
		refuse(mux.Refuse(mux.CodeUnsupported, "stream kind %d is not served by the client", h.Kind))
	}
}

func (c *Client) reverseRemote(bind, proto string) (Remote, bool) {
	for _, r := range c.cfg.Remotes {
		if r.Reverse && !r.Socks && r.Proto == proto && r.LocalAddr() == bind {
			return r, true
		}
	}
	return Remote{}, false
}

func (c *Client) hasReverseSOCKS() bool {
	for _, r := range c.cfg.Remotes {
		if r.Reverse && r.Socks {
			return true
		}
	}
	return false
}
