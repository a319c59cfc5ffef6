package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/burrowtun/burrow/socks"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/burrowtun/burrow/certs"
	"github.com/burrowtun/burrow/client"
	"github.com/urfave/cli/v2"
)

func clientCommand() *cli.Command {
	return &cli.Command{
		Name:      "client",
		Usage:     "connect to a server and run forwards",
		ArgsUsage: "wss://SERVER[:PORT][/PATH] REMOTE...",
		Description: "REMOTE is [local-host:]local-port:remote-host:remote-port (chisel's syntax);\n" +
			"a lone port or host:port means the same port on both sides. The local host\n" +
			"defaults to 127.0.0.1. IPv6 addresses go in brackets: [::1]:2222:[2001:db8::1]:22\n\n" +
			"  R:[bind-host:]port:host:port   the server listens, the client dials host:port (server needs --reverse)\n" +
			"  socks, [host:]port:socks       a local SOCKS5 proxy whose connections leave from the server\n" +
			"  R:socks, R:port:socks          a SOCKS5 proxy on the server whose connections leave from the client\n" +
			"  ...:host:port/udp              UDP datagrams, forward or reverse\n" +
			"  stdio:host:port                stdin/stdout as one connection (ssh ProxyCommand)",
		Flags: append(append([]cli.Flag{configFlag()}, connectionFlags()...), append([]cli.Flag{
			&cli.StringFlag{Name: "control", Usage: "serve file transfers of local 'burrow send/fetch/ls --control PATH' over this session, through a Unix socket at `PATH` (mode 0600)", EnvVars: []string{"BURROW_CONTROL"}},
			&cli.StringFlag{Name: "socks-auth", Usage: "require `USER:PASSWORD` from clients of SOCKS listeners: local ones and R:socks on the server", EnvVars: []string{"BURROW_SOCKS_AUTH"}},
			&cli.DurationFlag{Name: "max-retry-interval", Value: 0, DefaultText: "30s", Usage: "longest wait between reconnection attempts", EnvVars: []string{"BURROW_MAX_RETRY_INTERVAL"}},
			&cli.IntFlag{Name: "max-retry-count", Value: -1, Usage: "give up after this many failed attempts in a row (-1: never)", EnvVars: []string{"BURROW_MAX_RETRY_COUNT"}},
		}, append(muxFlags(), logFlags()...)...)...),
		Action: runClient,
	}
}

// connectionFlags are how a command reaches and authenticates to a
// server: client, send, fetch and ls take them all.
func connectionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "auth-file", Aliases: []string{"authfile"}, Usage: "read USER:PASSWORD from the first line of `FILE` (keeps it out of argv and the environment)", EnvVars: []string{"BURROW_AUTH_FILE"}},
		&cli.StringFlag{Name: "auth", Usage: "credentials as `USER:PASSWORD` (prefer the BURROW_AUTH variable: argv is visible to other users)", EnvVars: []string{"BURROW_AUTH"}},
		&cli.StringFlag{Name: "fingerprint", Usage: "trust the server whose certificate key has this SHA-256 (from 'burrow cert')", EnvVars: []string{"BURROW_FINGERPRINT"}},
		&cli.StringFlag{Name: "ca", Usage: "trust server certificates signed by the CAs in `FILE` instead of the system roots", EnvVars: []string{"BURROW_CA"}},
		&cli.BoolFlag{Name: "insecure", Usage: "do not verify the server at all (anyone on the path can read and change the traffic)", EnvVars: []string{"BURROW_INSECURE"}},
		&cli.StringFlag{Name: "tls-cert", Usage: "client certificate `FILE` for servers that require one (mTLS)", EnvVars: []string{"BURROW_TLS_CERT"}},
		&cli.StringFlag{Name: "tls-key", Usage: "client private key `FILE`", EnvVars: []string{"BURROW_TLS_KEY"}},
		&cli.StringFlag{Name: "proxy", Usage: "reach the server through `URL`: http://[user:pass@]host:port (CONNECT; Basic or NTLM, user may be DOMAIN\\user), socks5:// or socks5h://; default from HTTPS_PROXY/ALL_PROXY unless NO_PROXY, as curl does", EnvVars: []string{"BURROW_PROXY"}},
		&cli.StringFlag{Name: "hostname", Usage: "Host header to send, instead of the URL's host", EnvVars: []string{"BURROW_HOSTNAME"}},
		&cli.StringFlag{Name: "sni", Usage: "server name to send and verify, instead of the URL's host", EnvVars: []string{"BURROW_SNI"}},
		&cli.StringSliceFlag{Name: "header", Usage: "extra `'NAME: VALUE'` header on the upgrade request (repeatable)", EnvVars: []string{"BURROW_HEADER"}},
		&cli.StringFlag{Name: "inspection", Value: "e2e", Usage: "through a TLS-inspecting proxy: e2e (run the session end to end inside its connection, which it cannot read), refuse (exit), or allow (trust the proxy, which reads the tunnel)", EnvVars: []string{"BURROW_INSPECTION"}},
		&cli.StringFlag{Name: "transport", Value: "auto", Usage: "what the tunnel travels in: auto (WebSocket, else HTTP streaming, else HTTP polling, whichever gets through), websocket, stream or poll", EnvVars: []string{"BURROW_TRANSPORT"}},
		&cli.BoolFlag{Name: "accept-new", Usage: "record the key of a server that no CA vouches for on first use in the known servers file, and trust it from then on (as ssh's StrictHostKeyChecking=accept-new)", EnvVars: []string{"BURROW_ACCEPT_NEW"}},
		&cli.StringFlag{Name: "known-servers", Usage: "the known servers `FILE` (default: burrow/known_servers under the user's configuration directory)", EnvVars: []string{"BURROW_KNOWN_SERVERS"}},
	}
}

func runClient(c *cli.Context) error {
	fromFile, err := applyConfig(c, "client")
	if err != nil {
		return err
	}
	args := c.Args().Slice()
	if len(args) == 0 && len(fromFile["server"]) == 1 {
		args = append(fromFile["server"], fromFile["remotes"]...)
	}
	if len(args) < 2 {
		return errors.New("client needs a server URL and at least one remote, e.g. 'burrow client wss://example.com:8443 5432:db.internal:5432' (or server and remotes in --config)")
	}
	serverURL, err := parseServerURL(args[0])
	if err != nil {
		return err
	}
	remotes, err := client.ParseRemotes(args[1:])
	if err != nil {
		return err
	}
	// A stdio client is ssh's ProxyCommand, whose stderr is the user's
	// terminal: it says only what went wrong, unless told otherwise.
	level := c.String("log-level")
	if slices.IndexFunc(remotes, func(r client.Remote) bool { return !r.Stdio }) < 0 {
		level = "warn"
	}
	log, err := newLoggerAt(c, c.App.ErrWriter, level)
	if err != nil {
		return err
	}
	cfg, err := connectionConfig(c, serverURL, log)
	if err != nil {
		return err
	}
	socksAuth, err := parseSOCKSAuth(c.String("socks-auth"))
	if err != nil {
		return err
	}
	if c.Bool("insecure") {
		log.Warn("--insecure: the server's certificate is NOT verified; anyone on the network path can impersonate it and read the tunnel")
	}
	notify := notifier{log}
	var readyOnce sync.Once
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	go notify.Watchdog(ctx)
	cfg.Connected = func() { readyOnce.Do(notify.Ready) }
	cfg.Remotes = remotes
	if cfg.Mux, err = muxConfig(c); err != nil {
		return err
	}
	cfg.MaxRetryInterval = c.Duration("max-retry-interval")
	cfg.MaxRetryCount = c.Int("max-retry-count")
	cfg.NoRetry = c.Int("max-retry-count") == 0
	cfg.SOCKSAuth = socksAuth
	cfg.UDPIdle = c.Duration("udp-idle")
	cfg.UDPMaxFlows = c.Int("udp-max-flows")
	cfg.Control = c.String("control")
	cl, err := client.New(cfg)
	if err != nil {
		return err
	}
	err = cl.Run(ctx)
	notify.Stopping()
	return err
}

// knownServers is the known servers file of --known-servers and
// --accept-new.
func knownServers(c *cli.Context, log *slog.Logger) (*certs.KnownServers, error) {
	path := c.String("known-servers")
	if path == "" {
		var err error
		if path, err = certs.DefaultKnownServersPath(); err != nil {
			return nil, err
		}
	}
	return &certs.KnownServers{
		Path:      path,
		AcceptNew: c.Bool("accept-new"),
		Recorded: func(server, fingerprint string) {
			log.Info("recorded the server's key in the known servers file", "server", server, "fingerprint", fingerprint, "file", path)
		},
	}, nil
}

// parseSOCKSAuth reads --socks-auth USER:PASSWORD; "" is none.
func parseSOCKSAuth(s string) (*socks.Auth, error) {
	if s == "" {
		return nil, nil
	}
	u, p, ok := strings.Cut(s, ":")
	if !ok || u == "" {
		return nil, errors.New("--socks-auth must be USER:PASSWORD")
	}
	return &socks.Auth{Username: u, Password: p}, nil
}

// connectionConfig is the part of a client configuration that the
// connection flags describe.
func connectionConfig(c *cli.Context, serverURL string, log *slog.Logger) (client.Config, error) {
	var cfg client.Config
	auth, err := credentials(c)
	if err != nil {
		return cfg, err
	}
	user, password, err := splitAuth(auth)
	if err != nil {
		return cfg, err
	}
	header, err := parseHeaders(c.StringSlice("header"))
	if err != nil {
		return cfg, err
	}
	if h := c.String("hostname"); h != "" {
		header.Set("Host", h)
	}
	var proxyURL *url.URL
	if p := c.String("proxy"); p != "" {
		if proxyURL, err = client.ParseProxyURL(p); err != nil {
			return cfg, err
		}
	} else {
		u, _ := url.Parse(serverURL)
		if proxyURL, err = client.ProxyFromEnvironment(os.Getenv, u.Host); err != nil {
			return cfg, err
		}
	}
	if proxyURL != nil {
		log.Info("using proxy", "proxy", proxyURL.Redacted())
	}
	if cfg.Inspection, err = client.ParseInspection(c.String("inspection")); err != nil {
		return cfg, err
	}
	if cfg.Transport, err = client.ParseTransport(c.String("transport")); err != nil {
		return cfg, err
	}
	if dir, err := os.UserCacheDir(); err == nil {
		cfg.TransportMemory = filepath.Join(dir, "burrow", "transports")
	}
	opts := certs.ClientOptions{
		CAFile:      c.String("ca"),
		Fingerprint: c.String("fingerprint"),
		Insecure:    c.Bool("insecure"),
		ServerName:  c.String("sni"),
		CertFile:    c.String("tls-cert"),
		KeyFile:     c.String("tls-key"),
	}
	if opts.CAFile == "" && opts.Fingerprint == "" && !opts.Insecure {
		if opts.Known, err = knownServers(c, log); err != nil {
			return cfg, err
		}
		u, _ := url.Parse(serverURL)
		opts.Server = u.Host
		if u.Port() == "" {
			opts.Server = net.JoinHostPort(u.Hostname(), "443")
		}
	}
	if cfg.TLS, err = certs.ClientConfig(opts); err != nil {
		return cfg, err
	}
	if opts.Known != nil && opts.Known.AcceptNew {
		// New keys are recorded from inside the end-to-end layer only,
		// where a TLS-inspecting proxy cannot show its own.
		frozen := *opts.Known
		frozen.AcceptNew = false
		opts.Known = &frozen
		if cfg.OuterTLS, err = certs.ClientConfig(opts); err != nil {
			return cfg, err
		}
	}
	cfg.URL = serverURL
	cfg.Username, cfg.Password = user, password
	cfg.Header = header
	cfg.Proxy = proxyURL
	cfg.Logger = log
	return cfg, nil
}

// parseServerURL accepts wss:// and https:// URLs (the latter is the same
// endpoint) and a bare host:port, which means wss.
func parseServerURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "wss://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("server URL %q: %w", s, err)
	}
	switch u.Scheme {
	case "wss", "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("server URL %q: scheme must be wss:// (TLS is always on)", s)
	}
	if u.Host == "" {
		return "", fmt.Errorf("server URL %q has no host", s)
	}
	return u.String(), nil
}

// credentials returns USER:PASSWORD from --auth (or BURROW_AUTH), or
// from the first line of --auth-file.
func credentials(c *cli.Context) (string, error) {
	if c.String("auth") != "" || c.String("auth-file") == "" {
		return c.String("auth"), nil
	}
	data, err := os.ReadFile(c.String("auth-file"))
	if err != nil {
		return "", fmt.Errorf("--auth-file: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimRight(line, "\r"), nil
}

func splitAuth(s string) (user, password string, err error) {
	if s == "" {
		return "", "", errors.New("--auth USER:PASSWORD (or BURROW_AUTH) is required")
	}
	user, password, ok := strings.Cut(s, ":")
	if !ok || user == "" {
		return "", "", errors.New("--auth must be USER:PASSWORD")
	}
	return user, password, nil
}

func parseHeaders(values []string) (http.Header, error) {
	h := http.Header{}
	for _, v := range values {
		name, value, ok := strings.Cut(v, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("--header %q: want 'NAME: VALUE'", v)
		}
		h.Add(name, strings.TrimSpace(value))
	}
	return h, nil
}
