package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/server"
	"github.com/burrowtun/burrow/transfer"
)

// process is a server being run: its listeners, its handler and the
// http.Server that serves it, and what a reload replaces.
type process struct {
	cfg   *Config
	log   *slog.Logger
	tls   *serverTLS
	users atomic.Pointer[server.Users] // the users file as last loaded

	metrics    *metrics
	adminLn    net.Listener // nil without cfg.Admin
	ln         net.Listener
	srv        *server.Server
	hs         *http.Server
	adm        *admin
	certPoll   time.Duration
	forbidden  []netip.AddrPort
	filesRoot  string
	backend    http.Handler
	trusted    []netip.Prefix
	firstUsers *server.Users
}

// Run serves the tunnel described by cfg until ctx ends, then shuts down
// gracefully: it stops taking connections and sessions, tells clients to
// open no new streams, waits up to cfg.ShutdownTimeout for the streams in
// flight, and returns nil. It returns an error when cfg cannot be served
// (a bad setting, a file that does not load, a port that is taken) or
// when the listener fails.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	p, err := start(&cfg)
	if err != nil {
		return err
	}
	return p.run(ctx)
}

// start checks cfg, loads what it names, and binds the listeners, in the
// order whose first failure is the one reported.
func start(cfg *Config) (*process, error) {
	p := &process{cfg: cfg, log: cfg.Logger, certPoll: cfg.certPoll}
	if p.certPoll <= 0 {
		p.certPoll = time.Minute
	}
	if cfg.AuthFile == "" {
		return nil, errors.New("--authfile is required; create one with 'burrow user add --authfile FILE NAME'")
	}
	var err error
	if p.trusted, err = parseTrustedProxies(cfg.TrustedProxies); err != nil {
		return nil, err
	}
	if p.tls, err = newTLS(cfg, p.trusted, p.log); err != nil {
		return nil, err
	}
	if p.backend, err = newBackend(cfg.Backend, p.log); err != nil {
		return nil, err
	}
	if p.firstUsers, err = server.LoadUsers(cfg.AuthFile); err != nil {
		return nil, err
	}
	if p.filesRoot, err = checkFilesRoot(cfg.FilesRoot); err != nil {
		return nil, err
	}
	p.users.Store(p.firstUsers)
	p.metrics = newMetrics()
	if err := p.listen(); err != nil {
		return nil, err
	}
	if err := p.newServer(); err != nil {
		p.closeListeners()
		return nil, err
	}
	return p, nil
}

// listen binds the admin listener, if any, and the tunnel's; streams into
// either are refused.
func (p *process) listen() error {
	var err error
	if addr := p.cfg.Admin; addr != "" {
		if p.adminLn, err = listenAdmin(addr, p.log); err != nil {
			return err
		}
		if ap, err := netip.ParseAddrPort(p.adminLn.Addr().String()); err == nil {
			p.forbidden = append(p.forbidden, ap)
		}
	}
	if p.ln, err = net.Listen("tcp", p.cfg.Listen); err != nil {
		p.closeListeners()
		return fmt.Errorf("cannot listen on %s: %w", p.cfg.Listen, err)
	}
	if ap, err := netip.ParseAddrPort(p.ln.Addr().String()); err == nil {
		p.forbidden = append(p.forbidden, ap) // a stream into the tunnel's own port is refused too
	}
	return nil
}

func (p *process) closeListeners() {
	if p.adminLn != nil {
		p.adminLn.Close()
	}
	if p.ln != nil {
		p.ln.Close()
	}
}

// newServer makes the tunnel handler, its file service, and the
// http.Server with its timeouts.
func (p *process) newServer() error {
	cfg := p.cfg
	srv, err := server.New(server.Config{
		Auth:                 p.firstUsers,
		Backend:              p.backend,
		TrustedProxies:       p.trusted,
		AllowLinkLocal:       cfg.AllowLinkLocal,
		Forbidden:            p.forbidden,
		MaxSessions:          cfg.MaxSessions,
		MaxSessionsPerUser:   cfg.MaxSessionsPerUser,
		MaxStreamsPerSession: cfg.MaxStreams,
		Path:                 cfg.Path,
		Mux:                  cfg.Mux,
		Inner:                p.tls.config,
		Logger:               p.log,
		AllowReverse:         cfg.AllowReverse,
		UDPIdle:              cfg.UDPIdle,
		UDPMaxFlows:          cfg.UDPMaxFlows,
		HeaderTimeout:        cfg.HeaderTimeout,
		Metrics:              p.metrics.server,
		Files:                p.fileServer(),
	})
	if err != nil {
		return err
	}
	p.srv = srv
	p.hs = &http.Server{
		Handler:           srv,
		TLSConfig:         p.tls.serving(),
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(p.log.With("component", "http").Handler(), slog.LevelDebug),
	}
	server.HeadDeadline(p.hs, cfg.HeaderTimeout)
	p.adm = &admin{status: func() any {
		sessions, binds := srv.Status()
		return map[string]any{"sessions": sessions, "reverse": binds}
	}}
	return nil
}

// fileServer serves send, fetch and ls from each user's root, logging and
// counting every transfer.
func (p *process) fileServer() *transfer.Server {
	cfg := p.cfg
	return transfer.NewServer(transfer.ServerConfig{
		Lookup:              server.FileRoots{Shared: p.filesRoot, Users: p.users.Load}.Lookup,
		Limits:              transfer.Limits{MaxEntries: cfg.MaxManifestEntries},
		MaxTransfers:        cfg.MaxTransfers,
		MaxTransfersPerUser: cfg.MaxTransfersPerUser,
		Report: func(r transfer.Report) {
			p.metrics.server.Transferred(r)
			attrs := []any{"user", r.User, "op", r.Op, "files", r.Files, "bytes", r.Bytes, "duration", r.Duration.Round(time.Millisecond)}
			if r.Err != nil {
				p.log.Warn("transfer failed", append(attrs, "err", r.Err)...)
				return
			}
			p.log.Info("transfer finished", attrs...)
		},
	})
}

// run serves until ctx ends or the listener fails. Every goroutine it
// starts has ended when it returns.
func (p *process) run(ctx context.Context) error {
	defer p.ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if p.adminLn != nil {
		as := newAdminServer(p.adm.handler(p.metrics.reg, p.cfg.Pprof), p.log)
		wg.Go(func() { as.Serve(p.adminLn) })
		defer as.Close()
		p.log.Info("admin listening", "addr", p.adminLn.Addr().String())
	}
	p.checkCert()

	p.log.Info("listening", "addr", p.ln.Addr().String(), "fingerprint", p.tls.fingerprint(), "users", p.firstUsers.Len())
	serveErr := make(chan error, 1)
	go func() {
		ln := mux.CoalescingListener(p.ln, mux.MaxBatch(p.copyBuffer()))
		if p.tls.plain {
			serveErr <- p.hs.Serve(ln)
			return
		}
		serveErr <- p.hs.ServeTLS(ln, "", "")
	}()
	p.adm.ready.Store(true)
	p.cfg.Notify.Ready()
	wg.Go(func() { p.cfg.Notify.Watchdog(ctx) })
	return p.loop(ctx, serveErr)
}

func (p *process) copyBuffer() int {
	if p.cfg.Mux == nil {
		return 0
	}
	return p.cfg.Mux.CopyBuffer
}

// loop reloads on request, polls the certificate files, and ends with
// the listener or ctx. serveErr is the serving goroutine's result: both
// ways out wait for it.
func (p *process) loop(ctx context.Context, serveErr <-chan error) error {
	// Certificates renewed in place (certbot) are picked up without a
	// signal: the files are checked every minute.
	watch := time.NewTicker(p.certPoll)
	defer watch.Stop()
	certStamp := fileStamp(p.tls.certFile, p.tls.keyFile)
	for {
		select {
		case <-p.cfg.Reload:
			p.reload()
			certStamp = fileStamp(p.tls.certFile, p.tls.keyFile)
		case <-watch.C:
			certStamp = p.pollCert(certStamp)
		case err := <-serveErr:
			p.srv.Close()
			return fmt.Errorf("server stopped: %w", err)
		case <-ctx.Done():
			p.shutdown(serveErr)
			return nil
		}
	}
}

// shutdown stops taking connections, tells the sessions to open no new
// streams, and waits for those open until cfg.ShutdownTimeout, cutting
// what is left then.
func (p *process) shutdown(serveErr <-chan error) {
	p.cfg.Notify.Stopping()
	p.adm.ready.Store(false)
	p.log.Info("shutting down", "timeout", p.cfg.ShutdownTimeout)
	sctx, scancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
	defer scancel()
	// hs.Shutdown stops accepting at once, then waits for the requests
	// in flight, among them those of sessions over HTTP transports, which
	// end when srv.Shutdown has drained and closed them; WebSocket
	// sessions are hijacked and drained by srv.Shutdown alone.
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		p.hs.Shutdown(sctx)
	}()
	if err := p.srv.Shutdown(sctx); err != nil {
		p.log.Warn("shutdown cut open streams", "err", err)
	}
	<-httpDone
	<-serveErr
	p.log.Info("stopped")
}
