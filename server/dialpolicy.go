package server

import (
	"net"
	"net/netip"
	"syscall"

	"github.com/burrowtun/burrow/mux"
)

var (
	thisNetwork4 = netip.MustParsePrefix("0.0.0.0/8") // "this host on this network" (RFC 1122); 0.0.0.0 reaches local listeners
	linkLocal4   = netip.MustParsePrefix("169.254.0.0/16")
	linkLocal6   = netip.MustParsePrefix("fe80::/10")
	awsMetadata  = netip.MustParseAddr("fd00:ec2::254")
)

// guardAddresses returns a net.Dialer Control function that applies the
// dial policy (see dialPolicy.check) to the address actually dialed.
func guardAddresses(allowLinkLocal bool, forbidden []netip.AddrPort) func(network, address string, c syscall.RawConn) error {
	return newDialPolicy(allowLinkLocal, forbidden).control
}

// dialPolicy decides which addresses the server may dial for a stream.
// It is asked about the address actually dialed, after name resolution,
// by the net.Dialer's Control hook, for TCP and UDP alike, so a host name,
// a mapped or zoned form or a shorthand cannot lead it around its rules.
type dialPolicy struct {
	allowLinkLocal bool
	// forbidden are the server's own listeners (admin, tunnel), unmapped
	// and without zones.
	forbidden []netip.AddrPort
	// localAddrs lists this machine's addresses; net.InterfaceAddrs when
	// nil. Only asked when a port is one of forbidden's.
	localAddrs func() ([]netip.Addr, error)
}

func newDialPolicy(allowLinkLocal bool, forbidden []netip.AddrPort) *dialPolicy {
	p := &dialPolicy{allowLinkLocal: allowLinkLocal}
	for _, f := range forbidden {
		p.forbidden = append(p.forbidden, netip.AddrPortFrom(plainAddr(f.Addr()), f.Port()))
	}
	return p
}

// plainAddr is ip as the kernel routes it: without an IPv6 zone, which
// only picks an interface, and an IPv4-mapped address as IPv4.
func plainAddr(ip netip.Addr) netip.Addr {
	return ip.WithZone("").Unmap()
}

// check returns nil if the server may dial address, an "ip:port" as a
// net.Dialer's Control hook gets it, and otherwise a refusal (CodeDenied)
// that says why in the user's words. It refuses:
//   - an address it cannot read as ip:port (nothing unchecked is dialed);
//   - an unspecified destination (0.0.0.0/8, ::, an empty host), which
//     Linux connects to the machine itself;
//   - unless allowLinkLocal, link-local and cloud metadata addresses;
//   - a forbidden listener, through any address of this machine (loopback
//     or its own) or the listener's own.
func (p *dialPolicy) check(address string) error {
	host, _, err := net.SplitHostPort(address)
	if err == nil && host == "" {
		return refuseUnspecified(address)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return mux.Refuse(mux.CodeDenied, "the server cannot read %s as an IP address and port, so it does not dial it; give the target as host:port", address)
	}
	ip := plainAddr(ap.Addr())
	if ip.IsUnspecified() || thisNetwork4.Contains(ip) {
		return refuseUnspecified(address)
	}
	if !p.allowLinkLocal && (linkLocal4.Contains(ip) || linkLocal6.Contains(ip) || ip == awsMetadata) {
		return mux.Refuse(mux.CodeDenied, "%s is a link-local or cloud metadata address, which the server refuses (start it with --allow-link-local to permit)", address)
	}
	var local func(netip.Addr) bool // listed once, and only when a port matches
	for _, f := range p.forbidden {
		if ap.Port() != f.Port() {
			continue
		}
		if ip == f.Addr() {
			return refuseOwnListener(address)
		}
		if local == nil {
			local = p.localSet()
		}
		if local(ip) && local(f.Addr()) {
			return refuseOwnListener(address)
		}
	}
	return nil
}

func refuseUnspecified(address string) error {
	return mux.Refuse(mux.CodeDenied, "%s is an unspecified address (0.0.0.0 or ::), which would reach the server itself; name the host you mean, such as 127.0.0.1", address)
}

func refuseOwnListener(address string) error {
	return mux.Refuse(mux.CodeDenied, "%s reaches the server's own admin listener or tunnel listener, which streams may not reach; connect to it directly instead", address)
}

// localSet returns a test of whether a plain address is this machine's:
// unspecified (a listener on every address), loopback, or one of its
// interfaces' addresses. When the addresses cannot be listed every
// address is local: refusing a stream is the safe mistake for a check
// that guards the server's own listeners.
func (p *dialPolicy) localSet() func(netip.Addr) bool {
	list := p.localAddrs
	if list == nil {
		list = interfaceAddrs
	}
	addrs, err := list()
	return func(ip netip.Addr) bool {
		if err != nil || ip.IsUnspecified() || ip.IsLoopback() {
			return true
		}
		for _, a := range addrs {
			if plainAddr(a) == ip {
				return true
			}
		}
		return false
	}
}

// interfaceAddrs lists the addresses of this machine's interfaces.
func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

// control is the policy as a net.Dialer Control hook. Every network is
// checked: the server dials only TCP and UDP targets, and an address that
// is not ip:port is refused.
func (p *dialPolicy) control(_, address string, _ syscall.RawConn) error {
	return p.check(address)
}
