package client

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"

	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/go-ntlmssp"
	"golang.org/x/net/proxy"
)

// ProxyFromEnvironment returns the proxy for a wss:// connection to host
// (host or host:port) the way curl picks one: HTTPS_PROXY (or
// https_proxy), else ALL_PROXY (all_proxy), unless NO_PROXY (no_proxy)
// lists the host. Unlike Go's http.ProxyFromEnvironment, loopback
// destinations are proxied too unless NO_PROXY names them, as curl does.
// getenv is os.Getenv in production. It returns nil for no proxy.
func ProxyFromEnvironment(getenv func(string) string, host string) (*url.URL, error) {
	env := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	raw := env("HTTPS_PROXY", "https_proxy")
	if raw == "" {
		raw = env("ALL_PROXY", "all_proxy")
	}
	if raw == "" || noProxy(env("NO_PROXY", "no_proxy"), host) {
		return nil, nil
	}
	return ParseProxyURL(raw)
}

// noProxy reports whether list (curl's NO_PROXY syntax: comma-separated
// host names, domain suffixes with or without a leading dot, IP
// addresses, CIDR ranges, or "*") covers host.
func noProxy(list, host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	ip, ipErr := netip.ParseAddr(host)
	for _, e := range strings.Split(list, ",") {
		e = strings.ToLower(strings.TrimSpace(e))
		if e == "" {
			continue
		}
		if e == "*" {
			return true
		}
		if p, err := netip.ParsePrefix(e); err == nil {
			if ipErr == nil && p.Contains(ip) {
				return true
			}
			continue
		}
		if h, _, err := net.SplitHostPort(e); err == nil {
			e = h
		}
		e = strings.Trim(e, "[]")
		if a, err := netip.ParseAddr(e); err == nil {
			if ipErr == nil && a == ip {
				return true
			}
			continue
		}
		e = strings.TrimPrefix(e, ".")
		if host == e || strings.HasSuffix(host, "."+e) {
			return true
		}
	}
	return false
}

// ParseProxyURL checks a --proxy value: http://[user:pass@]host:port
// (CONNECT), socks5:// (names resolved here) or socks5h:// (names
// resolved by the proxy). A bare host:port means http.
func ParseProxyURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL, password included.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("the proxy URL is not valid: %v", err)
	}
	switch u.Scheme {
	case "http", "socks5", "socks5h":
	default:
		return nil, fmt.Errorf("proxy URL %q: scheme %q is not supported; use http://, socks5:// or socks5h://", redact(u), u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("proxy URL %q has no host", redact(u))
	}
	if u.Port() == "" {
		if u.Scheme == "http" {
			u.Host = net.JoinHostPort(u.Hostname(), "3128")
		} else {
			u.Host = net.JoinHostPort(u.Hostname(), "1080")
		}
	}
	return u, nil
}

// redact shows a proxy URL without its password.
func redact(u *url.URL) string { return u.Redacted() }

// ProxyError is a proxy's refusal to connect us: a 407 or another
// status in answer to CONNECT.
type ProxyError struct {
	Proxy      string // the proxy URL, without password
	Target     string
	StatusCode int
	Status     string
}

func (e *ProxyError) Error() string {
	hint := ""
	switch e.StatusCode {
	case http.StatusProxyAuthRequired:
		hint = "; check the proxy credentials in --proxy (http://user:pass@host:port) or HTTPS_PROXY"
	case http.StatusForbidden:
		hint = "; the proxy's policy does not allow this destination (many allow only port 443)"
	}
	return fmt.Sprintf("proxy %s refused CONNECT to %s: %s%s", e.Proxy, e.Target, e.Status, hint)
}

// proxyDialer dials through an HTTP CONNECT or SOCKS5 proxy.
type proxyDialer struct {
	proxy   *url.URL
	forward *net.Dialer
	timeout time.Duration
}

func (d *proxyDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch d.proxy.Scheme {
	case "socks5", "socks5h":
		var auth *proxy.Auth
		if u := d.proxy.User; u != nil {
			p, _ := u.Password()
			auth = &proxy.Auth{User: u.Username(), Password: p}
		}
		target := addr
		if d.proxy.Scheme == "socks5" {
			// socks5: resolve here, send the proxy an address.
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			if err != nil || len(ips) == 0 {
				return nil, fmt.Errorf("resolving %s for socks5 proxy: %w", host, err)
			}
			target = net.JoinHostPort(ips[0].Unmap().String(), port)
		}
		sd, err := proxy.SOCKS5("tcp", d.proxy.Host, auth, d.forward)
		if err != nil {
			return nil, err
		}
		conn, err := sd.(proxy.ContextDialer).DialContext(ctx, network, target)
		if err != nil {
			return nil, fmt.Errorf("socks proxy %s: %w", redact(d.proxy), err)
		}
		return conn, nil
	}
	return d.connect(ctx, addr)
}

// connect opens a tunnel to addr through an HTTP proxy with CONNECT,
// answering a 407 with Basic or NTLM authentication, whichever the proxy
// offers, when the proxy URL carries credentials.
func (d *proxyDialer) connect(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := d.forward.DialContext(ctx, "tcp", d.proxy.Host)
	if err != nil {
		return nil, fmt.Errorf("cannot reach proxy %s: %w", redact(d.proxy), err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(d.timeout))
	}
	br := bufio.NewReader(conn)
	fail := func(err error) (net.Conn, error) {
		conn.Close()
		return nil, err
	}
	user, pass := "", ""
	if d.proxy.User != nil {
		user = d.proxy.User.Username()
		pass, _ = d.proxy.User.Password()
	}
	resp, err := d.roundTrip(conn, br, addr, "")
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode == http.StatusProxyAuthRequired && user != "" {
		schemes := resp.Header.Values("Proxy-Authenticate")
		switch {
		case offers(schemes, "NTLM"):
			// The NTLM handshake is bound to this connection: the
			// proxy must keep it open after the 407.
			if resp.Close {
				conn.Close()
				if conn, err = d.forward.DialContext(ctx, "tcp", d.proxy.Host); err != nil {
					return nil, fmt.Errorf("cannot reach proxy %s: %w", redact(d.proxy), err)
				}
				br = bufio.NewReader(conn)
			}
			resp, err = d.ntlm(conn, br, addr, user, pass)
		case offers(schemes, "Basic"):
			if resp.Close {
				conn.Close()
				if conn, err = d.forward.DialContext(ctx, "tcp", d.proxy.Host); err != nil {
					return nil, fmt.Errorf("cannot reach proxy %s: %w", redact(d.proxy), err)
				}
				br = bufio.NewReader(conn)
			}
			resp, err = d.roundTrip(conn, br, addr, "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
		}
		if err != nil {
			return fail(err)
		}
	}
	if resp.StatusCode != http.StatusOK {
		return fail(&ProxyError{Proxy: redact(d.proxy), Target: addr, StatusCode: resp.StatusCode, Status: resp.Status})
	}
	conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		return fail(fmt.Errorf("proxy %s sent data before the tunnel was up", redact(d.proxy)))
	}
	return conn, nil
}

// sanitizeNTLMChallenge copes with challenges that curl and browsers
// accept but go-ntlmssp refuses: squid's helpers send a 49-byte message
// whose TargetName points past its end and which flags target info it
// does not carry. Such fields are cleared, and the message padded to the
// 48 bytes the parser expects; the server challenge itself is untouched.
func sanitizeNTLMChallenge(c []byte) []byte {
	if len(c) < 32 {
		return c
	}
	c = append(append([]byte(nil), c...), make([]byte, max(0, 48-len(c)))...)
	for _, at := range []int{12, 40} { // TargetName, TargetInfo: len(2) maxlen(2) offset(4)
		end := uint64(binary.LittleEndian.Uint32(c[at+4:])) + uint64(binary.LittleEndian.Uint16(c[at:]))
		if end > uint64(len(c)) {
			clear(c[at : at+8])
		}
	}
	return c
}

func offers(challenges []string, scheme string) bool {
	for _, c := range challenges {
		if strings.EqualFold(strings.Fields(c + " ")[0], scheme) {
			return true
		}
	}
	return false
}

// roundTrip sends one CONNECT and reads the answer, discarding its body.
func (d *proxyDialer) roundTrip(conn net.Conn, br *bufio.Reader, addr, authorization string) (*http.Response, error) {
	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: addr},
		Host:   addr,
		Header: http.Header{},
	}
	if authorization != "" {
		req.Header.Set("Proxy-Authorization", authorization)
	}
	if err := req.Write(conn); err != nil {
		return nil, fmt.Errorf("proxy %s: sending CONNECT: %w", redact(d.proxy), err)
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: reading the answer to CONNECT: %w", redact(d.proxy), err)
	}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
	return resp, nil
}

// ntlm runs the NTLM handshake: negotiate, read the challenge from the
// 407, answer with the authenticate message. user may be DOMAIN\user.
func (d *proxyDialer) ntlm(conn net.Conn, br *bufio.Reader, addr, user, pass string) (*http.Response, error) {
	domain := ""
	if i := strings.IndexByte(user, '\\'); i >= 0 {
		domain = user[:i]
	}
	negotiate, err := ntlmssp.NewNegotiateMessage(domain, "")
	if err != nil {
		return nil, err
	}
	resp, err := d.roundTrip(conn, br, addr, "NTLM "+base64.StdEncoding.EncodeToString(negotiate))
	if err != nil || resp.StatusCode != http.StatusProxyAuthRequired {
		return resp, err
	}
	var challenge []byte
	for _, h := range resp.Header.Values("Proxy-Authenticate") {
		if f := strings.Fields(h); len(f) == 2 && strings.EqualFold(f[0], "NTLM") {
			challenge, err = base64.StdEncoding.DecodeString(f[1])
			if err != nil {
				return nil, fmt.Errorf("proxy %s: bad NTLM challenge: %w", redact(d.proxy), err)
			}
		}
	}
	if challenge == nil {
		return resp, nil // a plain refusal: reported by the caller
	}
	auth, err := ntlmssp.ProcessChallenge(sanitizeNTLMChallenge(challenge), user, pass, domain != "")
	if err != nil {
		return nil, fmt.Errorf("proxy %s: NTLM: %w", redact(d.proxy), err)
	}
	return d.roundTrip(conn, br, addr, "NTLM "+base64.StdEncoding.EncodeToString(auth))
}
