package main

import (
	"fmt"
	"github.com/burrowtun/burrow/udp"

	"github.com/burrowtun/burrow/mux"
	"github.com/urfave/cli/v2"
)

// muxFlags tune the session; both ends take them.
func muxFlags() []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "keepalive", Value: mux.DefaultKeepAliveInterval, Usage: "ping the peer this often; a silent peer is dropped after about twice this", EnvVars: []string{"BURROW_KEEPALIVE"}},
		&cli.DurationFlag{Name: "udp-idle", Value: udp.DefaultIdle, Usage: "end a UDP flow after this long without a datagram", EnvVars: []string{"BURROW_UDP_IDLE"}},
		&cli.IntFlag{Name: "udp-max-flows", Value: udp.DefaultMaxFlows, Usage: "most concurrent flows (source addresses) of one UDP listener; datagrams of more are dropped and counted", EnvVars: []string{"BURROW_UDP_MAX_FLOWS"}},
		&cli.IntFlag{Name: "accept-backlog", Value: mux.DefaultAcceptBacklog, Usage: "most streams the peer may open that are not yet being served", EnvVars: []string{"BURROW_ACCEPT_BACKLOG"}},
		&cli.IntFlag{Name: "stream-window", Value: mux.DefaultStreamWindow, Usage: "largest receive window of one stream in bytes (bounds one stream to window/RTT)", EnvVars: []string{"BURROW_STREAM_WINDOW"}},
		&cli.IntFlag{Name: "copy-buffer", Value: mux.DefaultCopyBuffer, Usage: "bytes a busy forwarded connection is read at a time, and so the largest frame it sends (writes are batched up to twice this)", EnvVars: []string{"BURROW_COPY_BUFFER"}},
	}
}

// muxConfig is the session tuning the flags ask for.
func muxConfig(c *cli.Context) (*mux.Config, error) {
	cb := c.Int("copy-buffer")
	if c.IsSet("copy-buffer") && (cb < mux.MinCopyBuffer || cb > mux.MaxCopyBuffer) {
		return nil, fmt.Errorf("--copy-buffer %d is out of range: give %d to %d bytes", cb, mux.MinCopyBuffer, mux.MaxCopyBuffer)
	}
	return &mux.Config{
		KeepAliveInterval: c.Duration("keepalive"),
		KeepAliveTimeout:  c.Duration("keepalive"),
		StreamWindow:      uint32(c.Int("stream-window")),
		AcceptBacklog:     c.Int("accept-backlog"),
		CopyBuffer:        cb,
	}, nil
}
