package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
	"github.com/urfave/cli/v2"
)

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "run the tunnel server",
		Description: "Serves tunnel sessions over HTTPS (WebSocket, subprotocol burrow.v1).\n" +
			"Make a certificate with 'burrow cert self-signed' and users with 'burrow user add'.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: ":8443", Usage: "address to listen on", EnvVars: []string{"BURROW_LISTEN"}},
			&cli.StringFlag{Name: "tls-cert", Usage: "certificate `FILE` (PEM)", EnvVars: []string{"BURROW_TLS_CERT"}},
			&cli.StringFlag{Name: "tls-key", Usage: "private key `FILE` (PEM)", EnvVars: []string{"BURROW_TLS_KEY"}},
			&cli.StringFlag{Name: "authfile", Usage: "users `FILE` written by 'burrow user add'", EnvVars: []string{"BURROW_AUTHFILE"}},
			&cli.StringFlag{Name: "path", Value: "/", Usage: "URL path of the tunnel endpoint", EnvVars: []string{"BURROW_PATH"}},
			&cli.BoolFlag{Name: "reverse", Usage: "let clients ask the server to listen for them (R: remotes), within their allow lists", EnvVars: []string{"BURROW_REVERSE"}},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: 10 * time.Second, Usage: "on SIGTERM, how long to wait for sessions to end", EnvVars: []string{"BURROW_SHUTDOWN_TIMEOUT"}},
		}, append(muxFlags(), logFlags()...)...),
		Action: runServer,
	}
}

func runServer(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("server takes no arguments, got %q; flags go before arguments", c.Args().Slice())
	}
	log, err := newLogger(c, c.App.ErrWriter)
	if err != nil {
		return err
	}
	if c.String("tls-cert") == "" || c.String("tls-key") == "" {
		return errors.New("--tls-cert and --tls-key are required; make a pair with 'burrow cert self-signed --host NAME --out DIR'")
	}
	if c.String("authfile") == "" {
		return errors.New("--authfile is required; create one with 'burrow user add --authfile FILE NAME'")
	}
	cert, err := certs.NewReloadable(c.String("tls-cert"), c.String("tls-key"))
	if err != nil {
		return err
	}
	users, err := server.LoadUsers(c.String("authfile"))
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{
		Auth:         users,
		Path:         c.String("path"),
		Mux:          muxConfig(c),
		Logger:       log,
		AllowReverse: c.Bool("reverse"),
		UDPIdle:      c.Duration("udp-idle"),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", c.String("listen"), err)
	}
	hs := &http.Server{
		Handler:           srv,
		TLSConfig:         certs.ServerConfig(cert.GetCertificate),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelDebug),
	}
	log.Info("listening", "addr", ln.Addr().String(), "fingerprint", certs.Fingerprint(cert.Leaf()), "users", users.Len())
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.ServeTLS(mux.CoalescingListener(ln, 0), "", "") }()

	select {
	case err := <-serveErr:
		srv.Close()
		return fmt.Errorf("server stopped: %w", err)
	case <-c.Context.Done():
	}
	log.Info("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), c.Duration("shutdown-timeout"))
	defer cancel()
	hs.Shutdown(ctx) // stops accepting; tunnel sessions are hijacked and ended below
	srv.Close()
	<-serveErr
	return nil
}
