package socks

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/burrowtun/burrow/mux"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// SOCKS5 (RFC 1928, with RFC 1929 username/password authentication) as
// served by a listening end: the CONNECT request is read here and the
// target travels in a KindTCP stream header, so names are resolved on the
// far side and the far side's access list applies to every target.

// Auth is the username and password a SOCKS listener requires.
type Auth struct {
	Username, Password string
}

// ErrAuth is returned by Handshake for wrong SOCKS credentials.
var ErrAuth = errors.New("socks client gave a wrong username or password")

const (
	socksVersion     = 5
	socksAuthVersion = 1

	socksMethodNone     = 0x00
	socksMethodPassword = 0x02
	socksMethodRefused  = 0xff

	socksCmdConnect = 1

	socksAtypIPv4   = 1
	socksAtypDomain = 3
	socksAtypIPv6   = 4

	socksRepSucceeded       = 0
	socksRepFailure         = 1
	socksRepNotAllowed      = 2
	socksRepNetUnreachable  = 3
	socksRepHostUnreachable = 4
	socksRepRefused         = 5
	socksRepTTLExpired      = 6
	socksRepCmdUnsupported  = 7
	socksRepAtypUnsupported = 8
)

// WriteBindAuth sends, on a socks bind stream once the server accepted
// it, the credentials its listener must require: user length (1), user,
// password length (1), password, as in RFC 1929. nil sends an empty
// user, which means no authentication.
func WriteBindAuth(w io.Writer, a *Auth) error {
	var u, p string
	if a != nil {
		u, p = a.Username, a.Password
	}
	if len(u) > 255 || len(p) > 255 {
		return errors.New("socks username and password are at most 255 bytes each")
	}
	b := make([]byte, 0, 2+len(u)+len(p))
	b = append(append(append(b, byte(len(u))), u...), byte(len(p)))
	b = append(b, p...)
	_, err := w.Write(b)
	return err
}

// ReadBindAuth reads what WriteBindAuth sent: nil for no authentication.
func ReadBindAuth(r io.Reader) (*Auth, error) {
	var field [2][]byte
	for i := range field {
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return nil, fmt.Errorf("reading socks bind credentials: %w", err)
		}
		field[i] = make([]byte, n[0])
		if _, err := io.ReadFull(r, field[i]); err != nil {
			return nil, fmt.Errorf("reading socks bind credentials: %w", err)
		}
	}
	if len(field[0]) == 0 {
		return nil, nil
	}
	return &Auth{Username: string(field[0]), Password: string(field[1])}, nil
}

// Handshake reads a SOCKS5 greeting, authenticates the client when
// auth is non-nil, and reads its request. It returns the requested target
// as "host:port" (IPv6 in brackets). On failure it has already answered
// the client when the protocol allows it. The caller sets a deadline on
// c, and after dialing answers with Reply.
func Handshake(rw io.ReadWriter, auth *Auth) (string, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(rw, hdr[:]); err != nil {
		return "", fmt.Errorf("reading socks greeting: %w", err)
	}
	if hdr[0] != socksVersion {
		return "", fmt.Errorf("not a socks5 client (version byte %d)", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(rw, methods); err != nil {
		return "", fmt.Errorf("reading socks methods: %w", err)
	}
	want := byte(socksMethodNone)
	if auth != nil {
		want = socksMethodPassword
	}
	offered := false
	for _, m := range methods {
		offered = offered || m == want
	}
	if !offered {
		rw.Write([]byte{socksVersion, socksMethodRefused})
		if auth != nil {
			return "", errors.New("socks client does not offer username/password authentication, which this listener requires")
		}
		return "", errors.New("socks client offers no method this listener accepts (no authentication)")
	}
	if _, err := rw.Write([]byte{socksVersion, want}); err != nil {
		return "", err
	}
	if auth != nil {
		if err := socksPassword(rw, auth); err != nil {
			return "", err
		}
	}
	return socksRequest(rw)
}

func socksPassword(rw io.ReadWriter, auth *Auth) error {
	readField := func() ([]byte, error) {
		var n [1]byte
		if _, err := io.ReadFull(rw, n[:]); err != nil {
			return nil, err
		}
		b := make([]byte, n[0])
		_, err := io.ReadFull(rw, b)
		return b, err
	}
	var ver [1]byte
	if _, err := io.ReadFull(rw, ver[:]); err != nil {
		return fmt.Errorf("reading socks authentication: %w", err)
	}
	if ver[0] != socksAuthVersion {
		return fmt.Errorf("socks authentication version %d, want 1", ver[0])
	}
	user, err := readField()
	if err != nil {
		return fmt.Errorf("reading socks username: %w", err)
	}
	pass, err := readField()
	if err != nil {
		return fmt.Errorf("reading socks password: %w", err)
	}
	userOK := subtle.ConstantTimeCompare(user, []byte(auth.Username))
	passOK := subtle.ConstantTimeCompare(pass, []byte(auth.Password))
	if userOK&passOK != 1 {
		rw.Write([]byte{socksAuthVersion, 1})
		return ErrAuth
	}
	_, err = rw.Write([]byte{socksAuthVersion, 0})
	return err
}

func socksRequest(rw io.ReadWriter) (string, error) {
	var req [4]byte
	if _, err := io.ReadFull(rw, req[:]); err != nil {
		return "", fmt.Errorf("reading socks request: %w", err)
	}
	if req[0] != socksVersion {
		return "", fmt.Errorf("socks request version %d, want 5", req[0])
	}
	if req[1] != socksCmdConnect {
		writeSOCKSRep(rw, socksRepCmdUnsupported)
		return "", fmt.Errorf("socks command %d is not supported (only CONNECT)", req[1])
	}
	var host string
	switch req[3] {
	case socksAtypIPv4:
		var a [4]byte
		if _, err := io.ReadFull(rw, a[:]); err != nil {
			return "", fmt.Errorf("reading socks address: %w", err)
		}
		host = netip.AddrFrom4(a).String()
	case socksAtypIPv6:
		var a [16]byte
		if _, err := io.ReadFull(rw, a[:]); err != nil {
			return "", fmt.Errorf("reading socks address: %w", err)
		}
		host = netip.AddrFrom16(a).String()
	case socksAtypDomain:
		var n [1]byte
		if _, err := io.ReadFull(rw, n[:]); err != nil {
			return "", fmt.Errorf("reading socks address: %w", err)
		}
		name := make([]byte, n[0])
		if _, err := io.ReadFull(rw, name); err != nil {
			return "", fmt.Errorf("reading socks address: %w", err)
		}
		if !validSOCKSName(name) {
			writeSOCKSRep(rw, socksRepHostUnreachable)
			return "", fmt.Errorf("socks request names an invalid host %q", name)
		}
		host = string(name)
	default:
		writeSOCKSRep(rw, socksRepAtypUnsupported)
		return "", fmt.Errorf("socks address type %d is not supported", req[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(rw, port[:]); err != nil {
		return "", fmt.Errorf("reading socks port: %w", err)
	}
	p := binary.BigEndian.Uint16(port[:])
	if p == 0 {
		writeSOCKSRep(rw, socksRepHostUnreachable)
		return "", errors.New("socks request for port 0")
	}
	return net.JoinHostPort(host, strconv.Itoa(int(p))), nil
}

// validSOCKSName accepts printable names without separators that would
// change how the target is read (':' is allowed only inside an IPv6
// literal, which SOCKS sends as an address, not a name).
func validSOCKSName(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c <= ' ' || c == 0x7f || c == ':' || c == '/' || c == '[' || c == ']' {
			return false
		}
	}
	return true
}

// Reply answers a SOCKS request: nil means the connection is made;
// otherwise the error's Code (see mux.Coded) picks the SOCKS reply code.
func Reply(w io.Writer, err error) error {
	if err == nil {
		return writeSOCKSRep(w, socksRepSucceeded)
	}
	rep := byte(socksRepFailure)
	var coded mux.Coded
	if errors.As(err, &coded) {
		switch coded.ReplyCode() {
		case mux.CodeDenied:
			rep = socksRepNotAllowed
		case mux.CodeRefused:
			rep = socksRepRefused
		case mux.CodeUnreachable:
			rep = socksRepHostUnreachable
		case mux.CodeTimeout:
			rep = socksRepTTLExpired
		}
	}
	return writeSOCKSRep(w, rep)
}

func writeSOCKSRep(w io.Writer, rep byte) error {
	// The bound address is not meaningful through a tunnel: 0.0.0.0:0.
	_, err := w.Write([]byte{socksVersion, rep, 0, socksAtypIPv4, 0, 0, 0, 0, 0, 0})
	return err
}
