package inner

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"time"
)

// ALPN is the protocol both ends name in the inner handshake, so that an inner connection is never
// mistaken for an outer one or another protocol's.
const ALPN = "burrow-inner.1"

// Header is the request header by which a client asks for an end-to-end session, with the value Version
// and no credentials on the request, and the header by which a server that offers one answers the upgrade,
// with the same value. A server that does not know it asks for the missing credentials instead (HTTP 401).
const (
	Header  = "Burrow-Inner"
	Version = "1"
)

// loginVersion is the first byte of a login message.
const loginVersion = 1

// Limits of the login message and the verdict, checked before anything is allocated.
const (
	MaxUser     = 64   // the users file allows no longer names
	MaxPassword = 1024 // bytes
	MaxMessage  = 1024 // bytes of a verdict's message
)

// Login is what the client proves itself with, inside the inner connection.
type Login struct {
	User, Password string
}

// Status is the server's answer to a login. Values are part of the wire format: never renumber.
type Status uint8

const (
	StatusOK      Status = 0 // logged in: the session follows
	StatusDenied  Status = 1 // wrong user name or password
	StatusLimited Status = 2 // too many failed logins: retry after Verdict.RetryAfter
	StatusBusy    Status = 3 // the server is verifying too many logins: retry after Verdict.RetryAfter
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusDenied:
		return "denied"
	case StatusLimited:
		return "rate limited"
	case StatusBusy:
		return "busy"
	}
	return fmt.Sprintf("status %d", uint8(s))
}

// Verdict is the server's answer to a login.
type Verdict struct {
	Status     Status
	RetryAfter time.Duration // whole seconds on the wire; for StatusLimited and StatusBusy
	Message    string        // for the user, at most MaxMessage bytes
}

// RefusedError is a login the server refused; Client returns it.
type RefusedError struct {
	Verdict Verdict
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the server refused the login (%s): %s", e.Verdict.Status, e.Verdict.Message)
}

// ErrMalformed wraps what ReadLogin and ReadVerdict refuse.
var ErrMalformed = errors.New("malformed inner login")

// WriteLogin writes l: version 1, the user name's length (1 byte) and bytes, the password's length
// (2 bytes, big endian) and bytes, in one write.
func WriteLogin(w io.Writer, l Login) error {
	if len(l.User) == 0 || len(l.User) > MaxUser || len(l.Password) > MaxPassword {
		return fmt.Errorf("%w: user name of %d bytes or password of %d bytes", ErrMalformed, len(l.User), len(l.Password))
	}
	b := make([]byte, 0, 4+len(l.User)+len(l.Password))
	b = append(b, loginVersion, byte(len(l.User)))
	b = append(b, l.User...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(l.Password)))
	b = append(b, l.Password...)
	_, err := w.Write(b)
	return err
}

// ReadLogin reads what WriteLogin wrote, refusing a wrong version, an empty or overlong name and an
// overlong password before reading them.
func ReadLogin(r io.Reader) (Login, error) {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return Login{}, err
	}
	if head[0] != loginVersion {
		return Login{}, fmt.Errorf("%w: version %d, want %d", ErrMalformed, head[0], loginVersion)
	}
	if head[1] == 0 || head[1] > MaxUser {
		return Login{}, fmt.Errorf("%w: user name of %d bytes", ErrMalformed, head[1])
	}
	user := make([]byte, head[1])
	if _, err := io.ReadFull(r, user); err != nil {
		return Login{}, unexpected(err)
	}
	var plen [2]byte
	if _, err := io.ReadFull(r, plen[:]); err != nil {
		return Login{}, unexpected(err)
	}
	n := binary.BigEndian.Uint16(plen[:])
	if n > MaxPassword {
		return Login{}, fmt.Errorf("%w: password of %d bytes", ErrMalformed, n)
	}
	pass := make([]byte, n)
	if _, err := io.ReadFull(r, pass); err != nil {
		return Login{}, unexpected(err)
	}
	return Login{User: string(user), Password: string(pass)}, nil
}

// WriteVerdict writes v: the status (1 byte), the retry delay in seconds (4 bytes, big endian), the
// message's length (2 bytes) and bytes, in one write. A longer message is cut to MaxMessage bytes.
func WriteVerdict(w io.Writer, v Verdict) error {
	msg := v.Message
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
	}
	secs := uint32(min(max(v.RetryAfter.Round(time.Second)/time.Second, 0), math.MaxUint32))
	b := make([]byte, 0, 7+len(msg))
	b = append(b, byte(v.Status))
	b = binary.BigEndian.AppendUint32(b, secs)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	b = append(b, msg...)
	_, err := w.Write(b)
	return err
}

// ReadVerdict reads what WriteVerdict wrote, refusing an overlong message before reading it.
func ReadVerdict(r io.Reader) (Verdict, error) {
	var head [7]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return Verdict{}, err
	}
	n := binary.BigEndian.Uint16(head[5:])
	if n > MaxMessage {
		return Verdict{}, fmt.Errorf("%w: verdict message of %d bytes", ErrMalformed, n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return Verdict{}, unexpected(err)
	}
	return Verdict{
		Status:     Status(head[0]),
		RetryAfter: time.Duration(binary.BigEndian.Uint32(head[1:5])) * time.Second,
		Message:    string(msg),
	}, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// innerConfig is cfg for the inner handshake: TLS 1.3 only, and the inner ALPN.
func innerConfig(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	c.MinVersion, c.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	c.NextProtos = []string{ALPN}
	return c
}

// bound applies ctx's deadline and cancellation to outer until the returned function is called, which
// clears the deadline again.
func bound(ctx context.Context, outer net.Conn) (release func()) {
	if d, ok := ctx.Deadline(); ok {
		outer.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { outer.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		outer.SetDeadline(time.Time{})
	}
}

// Client runs the inner handshake over outer as the client: TLS 1.3 verified by cfg (which pins the
// server's key: certs.ClientConfig with a Fingerprint), then the login, then the server's verdict. It
// returns the inner connection, or a *RefusedError if the server refused the login, and an error of the
// handshake (a *certs.FingerprintMismatchError for another key) otherwise. ctx bounds the whole exchange.
func Client(ctx context.Context, outer net.Conn, cfg *tls.Config, login Login) (net.Conn, error) {
	c, err := Handshake(ctx, outer, cfg)
	if err != nil {
		return nil, err
	}
	if err := LogIn(ctx, c, login); err != nil {
		return nil, err
	}
	return c, nil
}

// Handshake runs the TLS 1.3 handshake of Client over outer, verified by cfg, and returns the inner
// connection before any login was sent on it: for a client that looks at the server's certificate first.
func Handshake(ctx context.Context, outer net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	release := bound(ctx, outer)
	defer release()
	c := tls.Client(outer, innerConfig(cfg))
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("inner handshake: %w", err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != ALPN {
		return nil, fmt.Errorf("inner handshake: the server speaks %q, not %q", p, ALPN)
	}
	return c, nil
}

// LogIn sends login on c (from Handshake, or after a matching channel binding the WebSocket connection
// itself) and reads the server's verdict: nil for StatusOK, else a *RefusedError.
func LogIn(ctx context.Context, c net.Conn, login Login) error {
	release := bound(ctx, c)
	defer release()
	if err := WriteLogin(c, login); err != nil {
		return fmt.Errorf("inner login: %w", err)
	}
	v, err := ReadVerdict(c)
	if err != nil {
		return fmt.Errorf("inner login: %w", err)
	}
	if v.Status != StatusOK {
		return &RefusedError{Verdict: v}
	}
	return nil
}

// Server runs the inner handshake over outer as the server: TLS 1.3 with cfg's certificate, then it reads
// the login, asks check for the verdict and writes it. It returns the inner connection and the login's user
// once check said StatusOK; otherwise an error (for a refused login, a *RefusedError with the verdict sent).
// ctx bounds the whole exchange, check included.
func Server(ctx context.Context, outer net.Conn, cfg *tls.Config, check func(context.Context, Login) Verdict) (net.Conn, string, error) {
	release := bound(ctx, outer)
	defer release()
	c := tls.Server(outer, innerConfig(cfg))
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, "", fmt.Errorf("inner handshake: %w", err)
	}
	login, err := ReadLogin(c)
	if err != nil {
		return nil, "", fmt.Errorf("inner login: %w", err)
	}
	v := check(ctx, login)
	if err := WriteVerdict(c, v); err != nil {
		return nil, "", fmt.Errorf("inner login: %w", err)
	}
	if v.Status != StatusOK {
		return nil, login.User, &RefusedError{Verdict: v}
	}
	return c, login.User, nil
}
