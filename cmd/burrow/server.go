package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/burrowtun/burrow/daemon"
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
			&cli.StringFlag{Name: "authfile", Aliases: []string{"auth-file"}, Usage: "users `FILE` written by 'burrow user add'", EnvVars: []string{"BURROW_AUTHFILE"}},
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

func adminFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "admin", Usage: "serve /healthz, /readyz, /metrics and /status on `ADDR` (keep it on loopback)", EnvVars: []string{"BURROW_ADMIN"}},
		&cli.BoolFlag{Name: "pprof", Usage: "also serve Go profiles under /debug/pprof/ on the admin listener", EnvVars: []string{"BURROW_PPROF"}},
	}
}

func concat[T any](lists ...[]T) []T {
	var out []T
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

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
	mc, err := muxConfig(c)
	if err != nil {
		return err
	}
	cfg := daemonConfig(c)
	cfg.Mux, cfg.Logger, cfg.Reload, cfg.Notify = mc, log, hup, notifier{log}
	return daemon.Run(c.Context, cfg)
}

// daemonConfig is the server configuration that the flags describe.
func daemonConfig(c *cli.Context) daemon.Config {
	return daemon.Config{
		Listen:              c.String("listen"),
		Path:                c.String("path"),
		TLS:                 c.String("tls"),
		CertFile:            c.String("tls-cert"),
		KeyFile:             c.String("tls-key"),
		SelfSigned:          c.Bool("tls-self-signed"),
		Domains:             c.StringSlice("tls-domain"),
		ACMEEmail:           c.String("acme-email"),
		ACMEDirectory:       c.String("acme-directory"),
		ACMECA:              c.String("acme-ca"),
		ClientCA:            c.String("tls-client-ca"),
		StateDir:            c.String("state-dir"),
		AuthFile:            c.String("authfile"),
		TrustedProxies:      c.StringSlice("trusted-proxy"),
		Backend:             c.String("backend"),
		AllowReverse:        c.Bool("reverse"),
		AllowLinkLocal:      c.Bool("allow-link-local"),
		FilesRoot:           c.String("files-root"),
		MaxTransfers:        c.Int("max-transfers"),
		MaxTransfersPerUser: c.Int("max-transfers-per-user"),
		MaxManifestEntries:  c.Int("max-manifest-entries"),
		MaxSessions:         c.Int("max-sessions"),
		MaxSessionsPerUser:  c.Int("max-sessions-per-user"),
		MaxStreams:          c.Int("max-streams"),
		HeaderTimeout:       c.Duration("header-timeout"),
		ShutdownTimeout:     zeroMeansNone(c.Duration("shutdown-timeout")),
		UDPIdle:             c.Duration("udp-idle"),
		UDPMaxFlows:         c.Int("udp-max-flows"),
		Admin:               c.String("admin"),
		Pprof:               c.Bool("pprof"),
	}
}

// zeroMeansNone maps a flag's 0 (do not wait) to the negative duration
// that says so in a daemon.Config, where 0 means the default.
func zeroMeansNone(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func defaultStateDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" { // systemd's StateDirectory=
		return d
	}
	return "/var/lib/burrow"
}
