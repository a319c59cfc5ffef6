package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
	"github.com/burrowtun/burrow/transfer"
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
			&cli.BoolFlag{Name: "tls-self-signed", Usage: "make a self-signed certificate once and keep it in --state-dir, so the fingerprint stays stable", EnvVars: []string{"BURROW_TLS_SELF_SIGNED"}},
			&cli.StringSliceFlag{Name: "tls-domain", Usage: "get and renew a certificate for `DOMAIN` with ACME (Let's Encrypt), TLS-ALPN-01 on the listen port (repeatable)", EnvVars: []string{"BURROW_TLS_DOMAIN"}},
			&cli.StringFlag{Name: "acme-email", Usage: "contact address given to the ACME CA", EnvVars: []string{"BURROW_ACME_EMAIL"}},
			&cli.StringFlag{Name: "acme-directory", Usage: "ACME directory `URL` (default: Let's Encrypt)", EnvVars: []string{"BURROW_ACME_DIRECTORY"}},
			&cli.StringFlag{Name: "acme-ca", Usage: "PEM `FILE` of roots that verify the ACME directory's HTTPS (a private CA)", EnvVars: []string{"BURROW_ACME_CA"}},
			&cli.StringFlag{Name: "tls-client-ca", Usage: "require client certificates signed by the CAs in `FILE` (mutual TLS)", EnvVars: []string{"BURROW_TLS_CLIENT_CA"}},
			&cli.StringFlag{Name: "state-dir", Value: defaultStateDir(), Usage: "`DIR` for generated and ACME certificates", EnvVars: []string{"BURROW_STATE_DIR"}},
			&cli.StringFlag{Name: "authfile", Usage: "users `FILE` written by 'burrow user add'", EnvVars: []string{"BURROW_AUTHFILE"}},
			&cli.StringFlag{Name: "path", Value: "/", Usage: "URL path of the tunnel endpoint", EnvVars: []string{"BURROW_PATH"}},
			&cli.StringFlag{Name: "tls", Value: "on", Usage: "on, or off behind a TLS-terminating proxy (only with a loopback --listen or --trusted-proxy)", EnvVars: []string{"BURROW_TLS"}},
			&cli.StringSliceFlag{Name: "trusted-proxy", Usage: "`CIDR` of reverse proxies whose X-Forwarded-For names the client (repeatable)", EnvVars: []string{"BURROW_TRUSTED_PROXY"}},
			&cli.StringFlag{Name: "backend", Usage: "serve every non-tunnel request from this website `URL` (reverse proxy), so the server looks like it", EnvVars: []string{"BURROW_BACKEND"}},
			&cli.BoolFlag{Name: "reverse", Usage: "let clients ask the server to listen for them (R: remotes), within their allow lists", EnvVars: []string{"BURROW_REVERSE"}},
			&cli.BoolFlag{Name: "allow-link-local", Usage: "let streams reach link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254)", EnvVars: []string{"BURROW_ALLOW_LINK_LOCAL"}},
			&cli.StringFlag{Name: "files-root", Usage: "serve burrow send/fetch/ls: each user gets `DIR`/USER (a user's \"files\" entry in the authfile overrides it)", EnvVars: []string{"BURROW_FILES_ROOT"}},
			&cli.IntFlag{Name: "max-transfers", Value: 64, Usage: "most file transfers in progress at once", EnvVars: []string{"BURROW_MAX_TRANSFERS"}},
			&cli.IntFlag{Name: "max-transfers-per-user", Value: 8, Usage: "most file transfers of one user in progress at once", EnvVars: []string{"BURROW_MAX_TRANSFERS_PER_USER"}},
			&cli.IntFlag{Name: "max-manifest-entries", Value: 100000, Usage: "most files and directories in one transfer or listing", EnvVars: []string{"BURROW_MAX_MANIFEST_ENTRIES"}},
			&cli.IntFlag{Name: "max-sessions", Value: 10000, Usage: "most sessions of all users together", EnvVars: []string{"BURROW_MAX_SESSIONS"}},
			&cli.IntFlag{Name: "max-sessions-per-user", Value: 100, Usage: "most sessions of one user", EnvVars: []string{"BURROW_MAX_SESSIONS_PER_USER"}},
			&cli.IntFlag{Name: "max-streams", Value: 16384, Usage: "most streams open at once on one session", EnvVars: []string{"BURROW_MAX_STREAMS"}},
			&cli.DurationFlag{Name: "header-timeout", Value: 10 * time.Second, Usage: "how long a connection may take to send its HTTP request headers, and a stream its header", EnvVars: []string{"BURROW_HEADER_TIMEOUT"}},
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
	// Taken at once: Go's default for SIGHUP is to exit, and a reload
	// may come as soon as systemd hears READY.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if _, err := applyConfig(c, "server"); err != nil {
		return err
	}
	log, err := newLogger(c, c.App.ErrWriter)
	if err != nil {
		return err
	}
	if c.String("authfile") == "" {
		return errors.New("--authfile is required; create one with 'burrow user add --authfile FILE NAME'")
	}
	var trusted []netip.Prefix
	for _, s := range c.StringSlice("trusted-proxy") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				return fmt.Errorf("--trusted-proxy %q: want a CIDR such as 10.0.0.0/8 or an address", s)
			}
		}
		trusted = append(trusted, p)
	}
	var tc *serverTLS
	switch c.String("tls") {
	case "on":
		if tc, err = newServerTLS(c, log); err != nil {
			return err
		}
	case "off":
		if err := plainAllowed(c.String("listen"), trusted); err != nil {
			return err
		}
		tc = &serverTLS{}
		log.Warn("--tls off: serving plain HTTP; a TLS-terminating proxy must be in front")
	default:
		return fmt.Errorf("--tls %q: want on or off", c.String("tls"))
	}
	var backend http.Handler
	if b := c.String("backend"); b != "" {
		u, err := url.Parse(b)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--backend %q: want an http:// or https:// URL", b)
		}
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.ErrorLog = slog.NewLogLogger(log.With("component", "backend").Handler(), slog.LevelWarn)
		backend = rp
	}
	users, err := server.LoadUsers(c.String("authfile"))
	if err != nil {
		return err
	}
	filesRoot := c.String("files-root")
	if filesRoot != "" {
		if filesRoot, err = filepath.Abs(filesRoot); err != nil {
			return fmt.Errorf("--files-root: %w", err)
		}
		if fi, err := os.Stat(filesRoot); err != nil || !fi.IsDir() {
			return fmt.Errorf("--files-root %s is not a directory; create it (mkdir -p %s) or point at another", filesRoot, filesRoot)
		}
	}
	var liveUsers atomic.Pointer[server.Users]
	liveUsers.Store(users)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := server.NewMetrics(reg)
	certExpiry := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "burrow_certificate_expiry_timestamp_seconds", Help: "When the served certificate expires (Unix time).",
	})
	reg.MustRegister(certExpiry)
	var forbidden []netip.AddrPort
	var adminLn net.Listener
	if addr := c.String("admin"); addr != "" {
		if adminLn, err = listenAdmin(addr, log); err != nil {
			return err
		}
		if ap, err := netip.ParseAddrPort(adminLn.Addr().String()); err == nil {
			forbidden = append(forbidden, ap)
		}
	}
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", c.String("listen"), err)
	}
	defer ln.Close()
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil {
		forbidden = append(forbidden, ap) // a stream into the tunnel's own port is refused too
	}
	files := transfer.NewServer(transfer.ServerConfig{
		Lookup:              server.FileRoots{Shared: filesRoot, Users: liveUsers.Load}.Lookup,
		Limits:              transfer.Limits{MaxEntries: c.Int("max-manifest-entries")},
		MaxTransfers:        c.Int("max-transfers"),
		MaxTransfersPerUser: c.Int("max-transfers-per-user"),
		Report: func(r transfer.Report) {
			metrics.Transferred(r)
			attrs := []any{"user", r.User, "op", r.Op, "files", r.Files, "bytes", r.Bytes, "duration", r.Duration.Round(time.Millisecond)}
			if r.Err != nil {
				log.Warn("transfer failed", append(attrs, "err", r.Err)...)
				return
			}
			log.Info("transfer finished", attrs...)
		},
	})
	mc, err := muxConfig(c)
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{
		Auth:                 users,
		Backend:              backend,
		TrustedProxies:       trusted,
		AllowLinkLocal:       c.Bool("allow-link-local"),
		Forbidden:            forbidden,
		MaxSessions:          c.Int("max-sessions"),
		MaxSessionsPerUser:   c.Int("max-sessions-per-user"),
		MaxStreamsPerSession: c.Int("max-streams"),
		Path:                 c.String("path"),
		Mux:                  mc,
		Logger:               log,
		AllowReverse:         c.Bool("reverse"),
		UDPIdle:              c.Duration("udp-idle"),
		UDPMaxFlows:          c.Int("udp-max-flows"),
		HeaderTimeout:        c.Duration("header-timeout"),
		Metrics:              metrics,
		Files:                files,
	})
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv,
		TLSConfig:         tc.config,
		ReadHeaderTimeout: c.Duration("header-timeout"),
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelDebug),
	}
	server.HeadDeadline(hs, c.Duration("header-timeout"))

	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	notify := notifier{log}
	adm := &admin{status: func() any {
		sessions, binds := srv.Status()
		return map[string]any{"sessions": sessions, "reverse": binds}
	}}
	if adminLn != nil {
		as := newAdminServer(adm.handler(reg, c.Bool("pprof")), log)
		go as.Serve(adminLn)
		defer as.Close()
		log.Info("admin listening", "addr", adminLn.Addr().String())
	}

	checkCert := func() {
		if tc.files == nil {
			return // ACME renews by itself
		}
		leaf := tc.files.Leaf()
		certExpiry.Set(float64(leaf.NotAfter.Unix()))
		if left := time.Until(leaf.NotAfter); left < certExpiryWarning {
			log.Warn("the TLS certificate expires soon; renew it", "not_after", leaf.NotAfter.UTC(), "left", left.Round(time.Hour))
		}
	}
	checkCert()

	log.Info("listening", "addr", ln.Addr().String(), "fingerprint", tc.fingerprint(), "users", users.Len())
	serveErr := make(chan error, 1)
	go func() {
		if tc.config == nil {
			serveErr <- hs.Serve(mux.CoalescingListener(ln, mux.MaxBatch(mc.CopyBuffer)))
			return
		}
		serveErr <- hs.ServeTLS(mux.CoalescingListener(ln, mux.MaxBatch(mc.CopyBuffer)), "", "")
	}()
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
			liveUsers.Store(fresh)
			closed := srv.SetAuth(fresh)
			log.Info("users reloaded", "users", fresh.Len(), "sessions_closed", closed)
		}
		if tc.files != nil {
			if err := tc.files.Reload(); err != nil {
				errs = append(errs, err)
			} else {
				log.Info("certificate reloaded", "fingerprint", tc.fingerprint(), "not_after", tc.files.Leaf().NotAfter.UTC())
				checkCert()
			}
		}
		err := errors.Join(errs...)
		metrics.Reloaded(err)
		if err != nil {
			log.Error("reload failed; keeping the previous configuration where it failed", "err", err)
		}
	}
	// Certificates renewed in place (certbot) are picked up without a
	// signal: the files are checked every minute.
	watch := time.NewTicker(time.Minute)
	defer watch.Stop()
	certStamp := fileStamp(tc.certFile, tc.keyFile)

	for {
		select {
		case <-hup:
			reload()
			certStamp = fileStamp(tc.certFile, tc.keyFile)
		case <-watch.C:
			if stamp := fileStamp(tc.certFile, tc.keyFile); tc.files != nil && stamp != certStamp {
				certStamp = stamp
				if err := tc.files.Reload(); err != nil {
					log.Error("certificate files changed but do not load; keeping the previous one", "err", err)
				} else {
					log.Info("certificate files changed; reloaded", "fingerprint", tc.fingerprint())
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

// serverTLS is where the server's certificate comes from: files (given,
// or generated once into the state directory), or ACME.
type serverTLS struct {
	config            *tls.Config
	files             *certs.Reloadable // nil with ACME
	certFile, keyFile string
}

func (t *serverTLS) fingerprint() string {
	if t.config == nil {
		return "(tls off)"
	}
	if t.files == nil {
		return "(acme)"
	}
	return certs.Fingerprint(t.files.Leaf())
}

// plainAllowed permits --tls off only where the traffic cannot leave the
// machine unencrypted by accident: a loopback listener, or an operator
// who named the proxy in front with --trusted-proxy.
func plainAllowed(listen string, trusted []netip.Prefix) error {
	if len(trusted) > 0 {
		return nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err == nil {
		if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
			return nil
		}
		if host == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("--tls off serves plain HTTP: allowed only with a loopback --listen (e.g. 127.0.0.1:8080) or with --trusted-proxy naming the TLS proxy in front, not with --listen %s", listen)
}

func defaultStateDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" { // systemd's StateDirectory=
		return d
	}
	return "/var/lib/burrow"
}

func newServerTLS(c *cli.Context, log *slog.Logger) (*serverTLS, error) {
	t := &serverTLS{certFile: c.String("tls-cert"), keyFile: c.String("tls-key")}
	sources := 0
	for _, set := range []bool{t.certFile != "" || t.keyFile != "", c.Bool("tls-self-signed"), len(c.StringSlice("tls-domain")) > 0} {
		if set {
			sources++
		}
	}
	switch {
	case sources == 0:
		return nil, errors.New("the server needs a certificate: --tls-cert and --tls-key, --tls-self-signed, or --tls-domain NAME")
	case sources > 1:
		return nil, errors.New("--tls-cert/--tls-key, --tls-self-signed and --tls-domain are alternatives; pass one")
	case len(c.StringSlice("tls-domain")) > 0:
		opts := certs.ACMEOptions{
			Domains:      c.StringSlice("tls-domain"),
			CacheDir:     filepath.Join(c.String("state-dir"), "acme"),
			Email:        c.String("acme-email"),
			DirectoryURL: c.String("acme-directory"),
		}
		if f := c.String("acme-ca"); f != "" {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("--acme-ca: %w", err)
			}
			opts.DirectoryRoots = x509.NewCertPool()
			if !opts.DirectoryRoots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--acme-ca file %s has no PEM certificates", f)
			}
		}
		m, err := certs.NewACME(opts)
		if err != nil {
			return nil, err
		}
		t.config = certs.ACMEServerConfig(m)
		log.Info("certificates from ACME", "domains", opts.Domains, "cache", opts.CacheDir)
	default:
		if c.Bool("tls-self-signed") {
			host, _ := os.Hostname()
			hosts := []string{"localhost", "127.0.0.1", "::1"}
			if host != "" {
				hosts = append([]string{host}, hosts...)
			}
			var created bool
			var err error
			t.certFile, t.keyFile, created, err = certs.LoadOrCreateSelfSigned(c.String("state-dir"), hosts)
			if err != nil {
				return nil, err
			}
			if created {
				log.Info("generated a self-signed certificate", "dir", c.String("state-dir"), "hosts", hosts)
			}
		} else if t.certFile == "" || t.keyFile == "" {
			return nil, errors.New("--tls-cert and --tls-key go together; make a pair with 'burrow cert self-signed --host NAME --out DIR'")
		}
		files, err := certs.NewReloadable(t.certFile, t.keyFile)
		if err != nil {
			return nil, err
		}
		t.files = files
		t.config = certs.ServerConfig(files.GetCertificate)
	}
	if ca := c.String("tls-client-ca"); ca != "" {
		if err := certs.RequireClientCerts(t.config, ca); err != nil {
			return nil, err
		}
	}
	return t, nil
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
