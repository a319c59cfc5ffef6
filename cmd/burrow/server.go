package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"
)

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "run the tunnel server",
		Description: "Serves tunnel sessions over HTTPS (WebSocket, subprotocol burrow.v1).\n" +
			"Make a certificate with 'burrow cert self-signed' and users with 'burrow user add'.\n" +
			"SIGHUP re-reads the users file and the certificate without dropping sessions;\n" +
			"SIGTERM stops taking sessions and waits for open streams (--shutdown-timeout).",
		Flags: append([]cli.Flag{
			configFlag(),
			&cli.StringFlag{Name: "listen", Value: ":8443", Usage: "address to listen on", EnvVars: []string{"BURROW_LISTEN"}},
			&cli.StringFlag{Name: "tls-cert", Usage: "certificate `FILE` (PEM)", EnvVars: []string{"BURROW_TLS_CERT"}},
			&cli.StringFlag{Name: "tls-key", Usage: "private key `FILE` (PEM)", EnvVars: []string{"BURROW_TLS_KEY"}},
			&cli.StringFlag{Name: "authfile", Usage: "users `FILE` written by 'burrow user add'", EnvVars: []string{"BURROW_AUTHFILE"}},
			&cli.StringFlag{Name: "path", Value: "/", Usage: "URL path of the tunnel endpoint", EnvVars: []string{"BURROW_PATH"}},
			&cli.BoolFlag{Name: "reverse", Usage: "let clients ask the server to listen for them (R: remotes), within their allow lists", EnvVars: []string{"BURROW_REVERSE"}},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: 30 * time.Second, Usage: "on SIGTERM, how long to wait for open streams", EnvVars: []string{"BURROW_SHUTDOWN_TIMEOUT"}},
		}, concat(muxFlags(), adminFlags(), logFlags())...),
		Action: runServer,
	}
}

func concat[T any](lists ...[]T) []T {
	var out []T
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// certExpiryWarning is how long before expiry the certificate is
// reported at every check.
const certExpiryWarning = 14 * 24 * time.Hour

func runServer(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("server takes no arguments, got %q; flags go before arguments", c.Args().Slice())
	}
	if _, err := applyConfig(c, "server"); err != nil {
		return err
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := server.NewMetrics(reg)
	certExpiry := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "burrow_certificate_expiry_timestamp_seconds", Help: "When the served certificate expires (Unix time).",
	})
	reg.MustRegister(certExpiry)
	srv, err := server.New(server.Config{
		Auth:         users,
		Path:         c.String("path"),
		Mux:          muxConfig(c),
		Logger:       log,
		AllowReverse: c.Bool("reverse"),
		UDPIdle:      c.Duration("udp-idle"),
		Metrics:      metrics,
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

	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	notify := notifier{log}
	adm := &admin{status: func() any {
		sessions, binds := srv.Status()
		return map[string]any{"sessions": sessions, "reverse": binds}
	}}
	if addr := c.String("admin"); addr != "" {
		al, err := listenAdmin(addr, log)
		if err != nil {
			ln.Close()
			return err
		}
		as := newAdminServer(adm.handler(reg, c.Bool("pprof")), log)
		go as.Serve(al)
		defer as.Close()
		log.Info("admin listening", "addr", al.Addr().String())
	}

	checkCert := func() {
		leaf := cert.Leaf()
		certExpiry.Set(float64(leaf.NotAfter.Unix()))
		if left := time.Until(leaf.NotAfter); left < certExpiryWarning {
			log.Warn("the TLS certificate expires soon; renew it", "not_after", leaf.NotAfter.UTC(), "left", left.Round(time.Hour))
		}
	}
	checkCert()

	log.Info("listening", "addr", ln.Addr().String(), "fingerprint", certs.Fingerprint(cert.Leaf()), "users", users.Len())
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.ServeTLS(mux.CoalescingListener(ln, 0), "", "") }()
	adm.ready.Store(true)
	notify.ready()
	go notify.watchdog(ctx)

	reload := func() {
		notify.reloading()
		defer notify.ready()
		var errs []error
		if fresh, err := server.LoadUsers(c.String("authfile")); err != nil {
			errs = append(errs, err)
		} else {
			closed := srv.SetAuth(fresh)
			log.Info("users reloaded", "users", fresh.Len(), "sessions_closed", closed)
		}
		if err := cert.Reload(); err != nil {
			errs = append(errs, err)
		} else {
			log.Info("certificate reloaded", "fingerprint", certs.Fingerprint(cert.Leaf()), "not_after", cert.Leaf().NotAfter.UTC())
			checkCert()
		}
		err := errors.Join(errs...)
		metrics.Reloaded(err)
		if err != nil {
			log.Error("reload failed; keeping the previous configuration where it failed", "err", err)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// Certificates renewed in place (certbot) are picked up without a
	// signal: the files are checked every minute.
	watch := time.NewTicker(time.Minute)
	defer watch.Stop()
	certStamp := fileStamp(c.String("tls-cert"), c.String("tls-key"))

	for {
		select {
		case <-hup:
			reload()
			certStamp = fileStamp(c.String("tls-cert"), c.String("tls-key"))
		case <-watch.C:
			if stamp := fileStamp(c.String("tls-cert"), c.String("tls-key")); stamp != certStamp {
				certStamp = stamp
				if err := cert.Reload(); err != nil {
					log.Error("certificate files changed but do not load; keeping the previous one", "err", err)
				} else {
					log.Info("certificate files changed; reloaded", "fingerprint", certs.Fingerprint(cert.Leaf()))
				}
			}
			checkCert()
		case err := <-serveErr:
			srv.Close()
			return fmt.Errorf("server stopped: %w", err)
		case <-c.Context.Done():
			notify.stopping()
			adm.ready.Store(false)
			log.Info("shutting down", "timeout", c.Duration("shutdown-timeout"))
			sctx, scancel := context.WithTimeout(context.Background(), c.Duration("shutdown-timeout"))
			defer scancel()
			hs.Shutdown(sctx) // stops accepting; tunnel sessions are hijacked and drained below
			if err := srv.Shutdown(sctx); err != nil {
				log.Warn("shutdown cut open streams", "err", err)
			}
			<-serveErr
			log.Info("stopped")
			return nil
		}
	}
}

// fileStamp identifies the current contents of files by size and mtime.
func fileStamp(paths ...string) string {
	var s string
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return s
}
