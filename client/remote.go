package client

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Remote is one forwarding rule, parsed from chisel's remote syntax:
//
//	[R:][local-host:][local-port:][remote-host:]remote-port[/tcp|/udp]
//	[R:][local-host:][local-port:]socks
//	stdio:[remote-host:]remote-port[/tcp]
//	stdio:socks
//
// The forms and what they mean:
//
//	3000                            127.0.0.1:3000 => 127.0.0.1:3000
//	example.com:3000                127.0.0.1:3000 => example.com:3000
//	3000:80                         127.0.0.1:3000 => 127.0.0.1:80
//	3000:google.com:80              127.0.0.1:3000 => google.com:80
//	192.168.0.1:3000:google.com:80  192.168.0.1:3000 => google.com:80
//	[::1]:2222:[2001:db8::1]:22     [::1]:2222 => [2001:db8::1]:22
//	socks                           127.0.0.1:1080 => socks
//	5000:socks                      127.0.0.1:5000 => socks
//	stdio:example.com:22            stdin/stdout => example.com:22
//	1.1.1.1:53/udp                  127.0.0.1:53 => 1.1.1.1:53, udp
//	R:2222:localhost:22             server listens on 127.0.0.1:2222, client dials localhost:22
//	R:socks                         server listens on 127.0.0.1:1080, client serves SOCKS5
//
// Defaults follow chisel's parser except for the local host: chisel binds
// forwards to 0.0.0.0 (all interfaces); Burrow binds to 127.0.0.1 unless a
// local host is given, for forwards, reverse forwards and socks alike, so
// that nothing is exposed to the network by accident. An omitted remote host
// is 127.0.0.1 (as in chisel's code), an omitted local port is the remote
// port, and an omitted socks local port is 1080.
//
// IPv6 addresses must be written in brackets, on either side; the Remote
// holds them without brackets, ready for [net.JoinHostPort]. Hosts are names
// (any script, as chisel accepts), IPv4 addresses or bracketed IPv6
// addresses; a host of digits only is rejected as a misplaced port.
//
// Other rules, from chisel: the protocol is case-insensitive and may also
// follow the local port ("5353/udp:1.1.1.1:53/udp") if both agree; socks
// takes tcp only, stdio cannot be reversed, and "host:socks" binds socks to
// host:1080. Burrow additionally allows local port 0 (any free port, as in
// tests) for forward remotes, but not for reverse ones, whose server port
// must be known; and rejects stdio over udp.
type Remote struct {
	LocalHost  string // bind host; "127.0.0.1" by default; empty when Stdio
	LocalPort  int    // bind port; 0 (any free port) is allowed for forward remotes; 0 when Stdio
	RemoteHost string // empty when Socks
	RemotePort int    // 1-65535; 0 when Socks
	Reverse    bool   // "R:" prefix: the server listens, the client dials the target
	Socks      bool   // target is a SOCKS5 server run by the far side
	Stdio      bool   // local end is stdin/stdout
	Proto      string // "tcp" or "udp"
}

// Defaults applied by ParseRemote.
const (
	remoteDefaultHost      = "127.0.0.1"
	remoteDefaultSocksPort = 1080
)

// The forms named in error messages.
const (
	remoteForwardForm = "[R:][local-host:][local-port:][remote-host:]remote-port[/tcp|/udp]"
	remoteSocksForm   = "[R:][local-host:][local-port:]socks"
	remoteStdioForm   = "stdio:[remote-host:]remote-port or stdio:socks"
)

// RemoteSpecError reports a remote specification that cannot be parsed, or
// that conflicts with another one given to ParseRemotes. The CLI can tell it
// apart from run-time failures with errors.As and show usage.
type RemoteSpecError struct {
	Spec     string // the specification, verbatim
	Position int    // 1-based position in the list given to ParseRemotes; 0 from ParseRemote
	Reason   string // what is wrong and what was expected
}

func (e *RemoteSpecError) Error() string {
	if e.Position > 0 {
		return fmt.Sprintf("remote #%d %q: %s", e.Position, e.Spec, e.Reason)
	}
	return fmt.Sprintf("remote %q: %s", e.Spec, e.Reason)
}

// ParseRemote parses one remote specification (see [Remote] for the
// grammar). Errors are *RemoteSpecError and name the input, the offending
// part and the expected form.
func ParseRemote(s string) (Remote, error) {
	r, reason := parseRemote(s)
	if reason != "" {
		return Remote{}, &RemoteSpecError{Spec: s, Reason: reason}
	}
	return r, nil
}

// ParseRemotes parses every specification, then checks them together: at
// most one may use stdio, and no two may listen on the same address with the
// same protocol on the same side. All parse errors are reported (joined);
// each names the offending specification and its 1-based position.
func ParseRemotes(specs []string) ([]Remote, error) {
	rs := make([]Remote, 0, len(specs))
	var errs []error
	for i, s := range specs {
		r, reason := parseRemote(s)
		if reason != "" {
			errs = append(errs, &RemoteSpecError{Spec: s, Position: i + 1, Reason: reason})
			continue
		}
		rs = append(rs, r)
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	if len(errs) > 1 {
		return nil, errors.Join(errs...) // one per line; errors.As finds the first
	}

	stdio := -1
	type listener struct {
		reverse bool
		proto   string
		addr    string
	}
	seen := make(map[listener]int, len(rs))
	for i, r := range rs {
		if r.Stdio {
			if stdio >= 0 {
				return nil, &RemoteSpecError{Spec: specs[i], Position: i + 1, Reason: fmt.Sprintf(
					"only one stdio remote is allowed; remote #%d %q already uses stdin/stdout", stdio+1, specs[stdio])}
			}
			stdio = i
			continue
		}
		if r.LocalPort == 0 {
			continue // each gets its own free port
		}
		l := listener{reverse: r.Reverse, proto: r.Proto, addr: r.LocalAddr()}
		if j, ok := seen[l]; ok {
			side := "client"
			if r.Reverse {
				side = "server"
			}
			return nil, &RemoteSpecError{Spec: specs[i], Position: i + 1, Reason: fmt.Sprintf(
				"the %s already listens on %s/%s for remote #%d %q; choose another local port",
				side, l.addr, l.proto, j+1, specs[j])}
		}
		seen[l] = i
	}
	return rs, nil
}

// LocalAddr is the address the listening side binds, in net.JoinHostPort
// form, or "stdio".
func (r Remote) LocalAddr() string {
	if r.Stdio {
		return "stdio"
	}
	return net.JoinHostPort(r.LocalHost, strconv.Itoa(r.LocalPort))
}

// RemoteAddr is the address the dialing side connects to, in
// net.JoinHostPort form, or "socks".
func (r Remote) RemoteAddr() string {
	if r.Socks {
		return "socks"
	}
	return net.JoinHostPort(r.RemoteHost, strconv.Itoa(r.RemotePort))
}

// String is the form used in logs, with every default filled in, for example
// "127.0.0.1:3000=>google.com:80" or "R:127.0.0.1:2222=>localhost:22/udp".
// It is not parseable; use Spec for that.
func (r Remote) String() string {
	var b strings.Builder
	if r.Reverse {
		b.WriteString("R:")
	}
	b.WriteString(r.LocalAddr())
	b.WriteString("=>")
	b.WriteString(r.RemoteAddr())
	if r.Proto == "udp" {
		b.WriteString("/udp")
	}
	return b.String()
}

// Spec is the canonical specification of r, with every default filled in,
// for example "127.0.0.1:3000:google.com:80" or "R:[::1]:53:1.1.1.1:53/udp".
// ParseRemote(r.Spec()) returns r for every r that ParseRemote returned.
func (r Remote) Spec() string {
	var b strings.Builder
	if r.Reverse {
		b.WriteString("R:")
	}
	if r.Stdio {
		b.WriteString("stdio")
	} else {
		b.WriteString(r.LocalAddr())
	}
	b.WriteByte(':')
	b.WriteString(r.RemoteAddr())
	if r.Proto == "udp" {
		b.WriteString("/udp")
	}
	return b.String()
}

// remotePart is one ':'-separated field of a specification.
type remotePart struct {
	text      string // as written, brackets included
	bracketed bool   // "[...]": an IPv6 address
}

// parseRemote returns the remote, or a non-empty reason it is invalid.
func parseRemote(s string) (Remote, string) {
	if s == "" {
		return Remote{}, "empty specification; expected " + remoteForwardForm
	}
	if reason := checkRemoteChars(s); reason != "" {
		return Remote{}, reason
	}
	var r Remote // r.Proto is set below, or by a "/proto" on the local port
	rest := s
	if after, ok := strings.CutPrefix(s, "R:"); ok {
		r.Reverse = true
		rest = after
		if rest == "" {
			return Remote{}, `nothing after "R:"; expected ` + remoteForwardForm
		}
	}
	parts, reason := splitRemote(rest)
	if reason != "" {
		return Remote{}, reason
	}
	if reason := checkRemoteIPv6(parts); reason != "" {
		return Remote{}, reason
	}

	// The protocol is written after the last field (chisel also allows it
	// after the local port, as long as both sides agree).
	last := &parts[len(parts)-1]
	var proto string
	if !last.bracketed {
		last.text, proto, reason = cutRemoteProto(last.text)
		if reason != "" {
			return Remote{}, reason + "; expected " + remoteForwardForm
		}
	}

	switch {
	case parts[0].text == "stdio" && !parts[0].bracketed:
		if r.Reverse {
			return Remote{}, "stdio cannot be reversed; the server has no stdin/stdout to offer; expected " + remoteStdioForm
		}
		r.Stdio = true
		reason = parseRemoteStdio(&r, parts[1:])
	case last.text == "socks" && !last.bracketed:
		r.Socks = true
		reason = parseRemoteSocks(&r, parts[:len(parts)-1])
	default:
		reason = parseRemoteForward(&r, parts)
	}
	if reason != "" {
		return Remote{}, reason
	}

	// Protocol checks, most specific first.
	if proto == "" {
		proto = "tcp"
	}
	localProto := r.Proto // set by the local port field, if it had one
	if localProto == "" {
		localProto = proto
	}
	switch {
	case r.Socks && r.Stdio && proto == "udp":
		return Remote{}, "socks does not support udp; expected stdio:socks"
	case r.Socks && (proto == "udp" || localProto == "udp"):
		return Remote{}, "socks does not support udp; expected " + remoteSocksForm
	case r.Stdio && proto == "udp":
		return Remote{}, "stdio does not support udp; expected " + remoteStdioForm
	case localProto != proto:
		return Remote{}, fmt.Sprintf("cross-protocol remotes are not supported: local port is %s but remote port is %s; write the protocol once, at the end", localProto, proto)
	}
	r.Proto = proto
	return r, ""
}

// parseRemoteForward fills r from "[local-host:][local-port:][remote-host:]remote-port".
func parseRemoteForward(r *Remote, parts []remotePart) string {
	var lh, lp, rh, rp *remotePart
	switch len(parts) {
	case 1:
		rp = &parts[0]
	case 2:
		if isRemotePortLike(parts[0]) {
			lp, rp = &parts[0], &parts[1]
		} else {
			rh, rp = &parts[0], &parts[1]
		}
	case 3:
		lp, rh, rp = &parts[0], &parts[1], &parts[2]
	case 4:
		lh, lp, rh, rp = &parts[0], &parts[1], &parts[2], &parts[3]
	default:
		return fmt.Sprintf("too many ':'-separated fields (%d, at most 4); expected %s", len(parts), remoteForwardForm)
	}

	var reason string
	if r.RemotePort, reason = parseRemotePortField("remote port", rp.text, rp.bracketed, false); reason != "" {
		return reason + "; expected " + remoteForwardForm
	}
	r.RemoteHost = remoteDefaultHost
	if rh != nil {
		if r.RemoteHost, reason = parseRemoteHost("remote host", *rh); reason != "" {
			return reason + "; expected " + remoteForwardForm
		}
	}
	r.LocalPort = r.RemotePort
	if lp != nil {
		if reason = parseRemoteLocalPort(r, *lp); reason != "" {
			return reason + "; expected " + remoteForwardForm
		}
	}
	r.LocalHost = remoteDefaultHost
	if lh != nil {
		if r.LocalHost, reason = parseRemoteHost("local host", *lh); reason != "" {
			return reason + "; expected " + remoteForwardForm
		}
	}
	return ""
}

// parseRemoteSocks fills r from the fields before "socks":
// "[local-host:][local-port]", or a lone local host as chisel allows.
func parseRemoteSocks(r *Remote, parts []remotePart) string {
	var lh, lp *remotePart
	switch len(parts) {
	case 0:
	case 1:
		if isRemotePortLike(parts[0]) {
			lp = &parts[0]
		} else {
			lh = &parts[0]
		}
	case 2:
		lh, lp = &parts[0], &parts[1]
	default:
		return fmt.Sprintf("too many ':'-separated fields before socks (%d, at most 2); expected %s", len(parts), remoteSocksForm)
	}
	r.LocalPort = remoteDefaultSocksPort
	if lp != nil {
		if reason := parseRemoteLocalPort(r, *lp); reason != "" {
			return reason + "; expected " + remoteSocksForm
		}
	}
	r.LocalHost = remoteDefaultHost
	if lh != nil {
		var reason string
		if r.LocalHost, reason = parseRemoteHost("local host", *lh); reason != "" {
			return reason + "; expected " + remoteSocksForm
		}
	}
	return ""
}

// parseRemoteStdio fills r from the fields after "stdio:":
// "[remote-host:]remote-port" or "socks".
func parseRemoteStdio(r *Remote, parts []remotePart) string {
	switch {
	case len(parts) == 0:
		return "stdio needs a target; expected " + remoteStdioForm
	case len(parts) == 1 && parts[0].text == "socks" && !parts[0].bracketed:
		r.Socks = true
		return ""
	case len(parts) > 2:
		return fmt.Sprintf("too many ':'-separated fields after stdio (%d, at most 2); stdio has no local host or port; expected %s", len(parts), remoteStdioForm)
	}
	rp := parts[len(parts)-1]
	var reason string
	if r.RemotePort, reason = parseRemotePortField("remote port", rp.text, rp.bracketed, false); reason != "" {
		return reason + "; expected " + remoteStdioForm
	}
	r.RemoteHost = remoteDefaultHost
	if len(parts) == 2 {
		if r.RemoteHost, reason = parseRemoteHost("remote host", parts[0]); reason != "" {
			return reason + "; expected " + remoteStdioForm
		}
	}
	return ""
}

// parseRemoteLocalPort sets r.LocalPort, and r.Proto if the field carries a
// "/proto" suffix (chisel accepts one there).
func parseRemoteLocalPort(r *Remote, p remotePart) string {
	text, proto, reason := cutRemoteProto(p.text)
	if reason != "" {
		return reason
	}
	if proto != "" {
		r.Proto = proto
	}
	port, reason := parseRemotePortField("local port", text, p.bracketed, true)
	if reason != "" {
		return reason
	}
	if port == 0 && r.Reverse {
		return "local port 0 (any free port) is not allowed for a reverse remote, whose server-side port must be known"
	}
	r.LocalPort = port
	return ""
}

// isRemotePortLike reports whether a field that may be a port or a host is
// meant as a port: all ASCII digits, possibly with a "/proto" suffix.
func isRemotePortLike(p remotePart) bool {
	if p.bracketed {
		return false
	}
	head, _, _ := strings.Cut(p.text, "/")
	return head != "" && strings.Trim(head, "0123456789") == ""
}

// parseRemotePortField parses a decimal port. 0 is returned as is when
// allowZero; callers decide what 0 means.
func parseRemotePortField(what, text string, bracketed, allowZero bool) (int, string) {
	if text == "" {
		return 0, what + " is empty"
	}
	lo := 1
	if allowZero {
		lo = 0
	}
	bad := fmt.Sprintf("%s %q is not a number in %d-65535", what, text, lo)
	if bracketed || strings.Trim(text, "0123456789") != "" {
		return 0, bad
	}
	n, err := strconv.Atoi(text)
	if err != nil || n > 65535 || n < lo {
		return 0, bad
	}
	return n, ""
}

// cutRemoteProto splits "port/proto". The protocol is case-insensitive, as in
// chisel, and returned in lower case; "" when there is no suffix.
func cutRemoteProto(text string) (head, proto, reason string) {
	head, proto, ok := strings.Cut(text, "/")
	if !ok {
		return text, "", ""
	}
	switch p := strings.ToLower(proto); p {
	case "tcp", "udp":
		return head, p, ""
	default:
		return "", "", fmt.Sprintf("unknown protocol %q (only tcp and udp are supported)", proto)
	}
}

// parseRemoteHost validates a host field and returns it without brackets.
func parseRemoteHost(what string, p remotePart) (string, string) {
	if p.bracketed {
		inner := p.text[1 : len(p.text)-1]
		addr, err := netip.ParseAddr(inner)
		if err != nil || !addr.Is6() {
			return "", fmt.Sprintf("%s %s is not an IPv6 address; brackets are only for IPv6 addresses such as [::1]", what, p.text)
		}
		if _, zone, ok := strings.Cut(inner, "%"); ok {
			for _, c := range zone {
				if !isRemoteHostRune(c) {
					return "", fmt.Sprintf("%s %s has an invalid character %q in its zone", what, p.text, c)
				}
			}
		}
		return inner, ""
	}
	h := p.text
	if h == "" {
		return "", what + " is empty"
	}
	if len(h) > 253 {
		return "", fmt.Sprintf("%s %.20q... is longer than 253 bytes", what, h)
	}
	for _, c := range h {
		if !isRemoteHostRune(c) {
			return "", fmt.Sprintf("%s %q contains %q, which is not allowed in a host name or address", what, h, c)
		}
	}
	if strings.Trim(h, "0123456789") == "" {
		return "", fmt.Sprintf("%s %q is a number, not a host (is a field missing or extra?)", what, h)
	}
	if strings.Trim(h, "0123456789.") == "" {
		if _, err := netip.ParseAddr(h); err != nil {
			return "", fmt.Sprintf("%s %q is not a valid IPv4 address", what, h)
		}
	}
	return h, ""
}

// isRemoteHostRune reports whether c may appear in a host name: letters and
// digits of any script (internationalized names, as chisel accepts), '-',
// '.' and '_'.
func isRemoteHostRune(c rune) bool {
	return unicode.IsLetter(c) || unicode.IsDigit(c) || c == '-' || c == '.' || c == '_'
}

// checkRemoteChars rejects invalid UTF-8, whitespace and control characters
// anywhere in the specification.
func checkRemoteChars(s string) string {
	if !utf8.ValidString(s) {
		return "invalid UTF-8"
	}
	for i, c := range s {
		switch {
		case unicode.IsSpace(c):
			return fmt.Sprintf("whitespace at byte %d; give each remote as one argument without spaces", i)
		case !unicode.IsPrint(c):
			return fmt.Sprintf("control or non-printable character %q at byte %d", c, i)
		}
	}
	return ""
}

// splitRemote splits s at ':' outside brackets.
func splitRemote(s string) ([]remotePart, string) {
	var parts []remotePart
	for {
		if strings.HasPrefix(s, "[") {
			end := strings.IndexByte(s, ']')
			if end < 0 {
				return nil, fmt.Sprintf("unbalanced '[' in %q; expected an IPv6 address such as [::1]", s)
			}
			if strings.IndexByte(s[1:end], '[') >= 0 {
				return nil, fmt.Sprintf("unbalanced '[' in %q; expected an IPv6 address such as [::1]", s[:end+1])
			}
			parts = append(parts, remotePart{text: s[:end+1], bracketed: true})
			s = s[end+1:]
			if s == "" {
				return parts, ""
			}
			if s[0] != ':' {
				return nil, fmt.Sprintf("unexpected %q after %q; expected ':' after an IPv6 address in brackets", s, parts[len(parts)-1].text)
			}
			s = s[1:]
			if s == "" {
				return append(parts, remotePart{}), ""
			}
			continue
		}
		field, rest, more := strings.Cut(s, ":")
		if i := strings.IndexAny(field, "[]"); i >= 0 {
			return nil, fmt.Sprintf("unbalanced %q in %q; IPv6 addresses are written whole in brackets, such as [::1]", field[i], field)
		}
		parts = append(parts, remotePart{text: field})
		if !more {
			return parts, ""
		}
		s = rest
	}
}

// checkRemoteIPv6 recognises an IPv6 address written without brackets: more
// than four fields, or an empty one ("::"), where some run of unbracketed
// fields joined by ':' parses as IPv6.
func checkRemoteIPv6(parts []remotePart) string {
	suspicious := len(parts) > 4
	for _, p := range parts {
		if p.text == "" {
			suspicious = true
		}
	}
	if !suspicious {
		return ""
	}
	for i := range parts {
		var run strings.Builder
		// An IPv6 address spans at most 9 fields ("1:2:3:4:5:6:7::").
		for j := i; j < len(parts) && j < i+9 && !parts[j].bracketed; j++ {
			if j > i {
				run.WriteByte(':')
			}
			run.WriteString(parts[j].text)
			if j == i {
				continue // a single field has no ':' and cannot be IPv6
			}
			if a, err := netip.ParseAddr(run.String()); err == nil && a.Is6() {
				return "looks like an IPv6 address without brackets; write IPv6 addresses in brackets, e.g. [::1]:2222:[2001:db8::1]:22"
			}
		}
	}
	return ""
}
