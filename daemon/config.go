package daemon

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// Config configures Run. The zero value of a field means its default;
// Run copies the Config before filling them in, so the caller's value is
// never changed. Fields are named after the 'burrow server' flags that
// set them, and errors about a field name that flag.
type Config struct {
	// Listen is the tunnel's TCP address. Default ":8443".
	Listen string
	// Path is the URL path of the tunnel endpoint. Default "/".
	Path string

	// TLS is "on" (the default when empty), or "off" to serve plain HTTP
	// behind a TLS-terminating proxy: allowed only with a loopback Listen
	// or with TrustedProxies naming that proxy.
	TLS string
	// CertFile and KeyFile are a PEM certificate and key. They are
	// re-read on Reload and when the files change (checked every minute).
	CertFile, KeyFile string
	// SelfSigned makes a self-signed certificate once and keeps it in
	// StateDir, so its fingerprint stays the same across restarts.
	SelfSigned bool
	// Domains get a certificate from ACME (TLS-ALPN-01 on Listen), cached
	// under StateDir/acme. CertFile/KeyFile, SelfSigned and Domains are
	// alternatives: exactly one is needed when TLS is on.
	Domains []string
	// ACMEEmail is the contact address given to the ACME CA, and
	// ACMEDirectory its directory URL (default Let's Encrypt).
	ACMEEmail, ACMEDirectory string
	// ACMECA is a PEM file of roots that verify the ACME directory's
	// HTTPS (a private CA).
	ACMECA string
	// ClientCA, when set, is a PEM file of CAs that must have signed the
	// client's certificate (mutual TLS).
	ClientCA string
	// StateDir holds generated and ACME certificates. Default
	// "/var/lib/burrow".
	StateDir string

	// AuthFile is the users file written by 'burrow user add'. Required;
	// it is re-read on Reload.
	AuthFile string
	// TrustedProxies are CIDRs (or single addresses) of reverse proxies
	// whose X-Forwarded-For names the client.
	TrustedProxies []string
	// Backend, when set, is the http:// or https:// URL of a website that
	// serves every request that is not a tunnel upgrade.
	Backend string
	// AllowReverse lets clients ask the server to listen for them.
	AllowReverse bool
	// AllowLinkLocal lets streams reach link-local and cloud metadata
	// addresses.
	AllowLinkLocal bool
	// FilesRoot, when set, serves send, fetch and ls: each user gets
	// FilesRoot/USER unless the users file names another directory.
	FilesRoot string

	// MaxTransfers and MaxTransfersPerUser bound the file transfers in
	// progress, and MaxManifestEntries the entries of one transfer or
	// listing. Zero means package transfer's defaults.
	MaxTransfers, MaxTransfersPerUser, MaxManifestEntries int
	// MaxSessions, MaxSessionsPerUser and MaxStreams bound sessions and
	// the streams of one session. Zero means package server's defaults.
	MaxSessions, MaxSessionsPerUser, MaxStreams int
	// HeaderTimeout bounds how long a connection may take to send its TLS
	// handshake and HTTP request head, and a stream its header. Default
	// 10s.
	HeaderTimeout time.Duration
	// ShutdownTimeout is how long shutdown waits for open streams before
	// cutting them. Default 30s; negative means not at all.
	ShutdownTimeout time.Duration
	// Mux tunes sessions; nil means mux's defaults.
	Mux *mux.Config
	// UDPIdle and UDPMaxFlows bound reverse UDP flows. Zero means package
	// server's defaults.
	UDPIdle     time.Duration
	UDPMaxFlows int

	// Admin, when set, is the address of the operator's listener
	// (/healthz, /readyz, /metrics, /status); keep it on loopback.
	Admin string
	// Pprof also serves Go profiles under /debug/pprof/ on Admin.
	Pprof bool

	// Logger receives the process's log. Default: discard.
	Logger *slog.Logger
	// Reload, when set, asks for the users file and the certificate to be
	// read again, once per value received ('burrow server' sends SIGHUP
	// here). Sessions stay up; users that lost their entry are cut.
	Reload <-chan os.Signal
	// Notify, when set, hears where the process is (systemd's sd_notify).
	Notify Notifier

	// certPoll is how often the certificate files are checked for a
	// change. Default a minute; tests shorten it.
	certPoll time.Duration
}

// Notifier is told where the process is, for a service manager: Ready once
// the listener accepts and after each reload, Reloading before one,
// Stopping on the way out. Watchdog runs until ctx ends, pinging the
// manager if it wants pings.
type Notifier interface {
	Ready()
	Reloading()
	Stopping()
	Watchdog(ctx context.Context)
}

type nopNotifier struct{}

func (nopNotifier) Ready()                   {}
func (nopNotifier) Reloading()               {}
func (nopNotifier) Stopping()                {}
func (nopNotifier) Watchdog(context.Context) {}

// withDefaults returns a copy of cfg with the defaults filled in.
func (cfg Config) withDefaults() Config {
	if cfg.Listen == "" {
		cfg.Listen = ":8443"
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.TLS == "" {
		cfg.TLS = "on"
	}
	if cfg.StateDir == "" {
		cfg.StateDir = "/var/lib/burrow"
	}
	if cfg.HeaderTimeout == 0 {
		cfg.HeaderTimeout = 10 * time.Second
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	} else if cfg.ShutdownTimeout < 0 {
		cfg.ShutdownTimeout = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Notify == nil {
		cfg.Notify = nopNotifier{}
	}
	cfg.Domains = append([]string(nil), cfg.Domains...)
	cfg.TrustedProxies = append([]string(nil), cfg.TrustedProxies...)
	return cfg
}
