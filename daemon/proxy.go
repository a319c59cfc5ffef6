package daemon

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
)

// parseTrustedProxies reads --trusted-proxy values: CIDRs, or single
// addresses meaning a prefix of their full length.
func parseTrustedProxies(values []string) ([]netip.Prefix, error) {
	var trusted []netip.Prefix
	for _, s := range values {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				return nil, fmt.Errorf("--trusted-proxy %q: want a CIDR such as 10.0.0.0/8 or an address", s)
			}
		}
		trusted = append(trusted, p)
	}
	return trusted, nil
}

// newBackend is the reverse proxy to the --backend website, or nil
// without one.
func newBackend(b string, log *slog.Logger) (http.Handler, error) {
	if b == "" {
		return nil, nil
	}
	u, err := url.Parse(b)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--backend %q: want an http:// or https:// URL", b)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = slog.NewLogLogger(log.With("component", "backend").Handler(), slog.LevelWarn)
	return rp, nil
}

// checkFilesRoot makes --files-root absolute and checks that it is a
// directory; "" stays "" (no file service root).
func checkFilesRoot(filesRoot string) (string, error) {
	if filesRoot == "" {
		return "", nil
	}
	filesRoot, err := filepath.Abs(filesRoot)
	if err != nil {
		return "", fmt.Errorf("--files-root: %w", err)
	}
	if fi, err := os.Stat(filesRoot); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("--files-root %s is not a directory; create it (mkdir -p %s) or point at another", filesRoot, filesRoot)
	}
	return filesRoot, nil
}
