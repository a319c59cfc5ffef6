package server

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/burrowtun/burrow/mux"
)

// admit checks the session limits for a new session of user and reserves
// its place until unreserve, so that concurrent logins cannot together
// exceed a limit while their upgrades are in flight.
func (s *Server) admit(user string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions)+s.reservedTotal >= s.cfg.MaxSessions {
		s.metrics.limitHit("sessions")
		return fmt.Errorf("the server has its maximum of %d sessions; retry later", s.cfg.MaxSessions)
	}
	n := s.reserved[user]
	for sess := range s.sessions {
		if sess.name == user {
			n++
		}
	}
	if n >= s.cfg.MaxSessionsPerUser {
		s.metrics.limitHit("sessions_per_user")
		return fmt.Errorf("user %s has its maximum of %d sessions; close one first", user, s.cfg.MaxSessionsPerUser)
	}
	s.reserved[user]++
	s.reservedTotal++
	return nil
}

// unreserve gives back the place admit reserved, once the session is
// tracked or has failed to start.
func (s *Server) unreserve(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reserved[user]--; s.reserved[user] <= 0 {
		delete(s.reserved, user)
	}
	s.reservedTotal--
}

var (
	linkLocal4  = netip.MustParsePrefix("169.254.0.0/16")
	linkLocal6  = netip.MustParsePrefix("fe80::/10")
	awsMetadata = netip.MustParseAddr("fd00:ec2::254")
)

// guardAddresses returns a net.Dialer Control function that refuses, on
// the address actually dialed (after name resolution), the forbidden
// addresses and, unless allowLinkLocal, link-local and cloud metadata
// addresses.
func guardAddresses(allowLinkLocal bool, forbidden []netip.AddrPort) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return nil // not an IP address: nothing to check
		}
		ip := ap.Addr().Unmap()
		if !allowLinkLocal && (linkLocal4.Contains(ip) || linkLocal6.Contains(ip) || ip == awsMetadata) {
			return mux.Refuse(mux.CodeDenied, "%s is a link-local or cloud metadata address, which the server refuses (start it with --allow-link-local to permit)", address)
		}
		for _, f := range forbidden {
			if ap.Port() != f.Port() {
				continue
			}
			if f.Addr() == ip || (f.Addr().IsUnspecified() && (ip.IsLoopback() || isLocal(ip))) {
				return mux.Refuse(mux.CodeDenied, "%s is the server's own admin listener, which streams may not reach", address)
			}
		}
		return nil
	}
}

// isLocal reports whether ip is one of this machine's addresses. When the
// addresses cannot be listed it says yes: refusing a stream is the safe
// mistake for a check that guards the admin listener.
func isLocal(ip netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == ip {
			return true
		}
	}
	return false
}
