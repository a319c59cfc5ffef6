package mux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// HeaderVersion is the version byte that starts every stream header.
const HeaderVersion = 1

// MaxTargetLen bounds the target carried in a stream header, and the
// message carried in a reply, so that a peer cannot make us allocate more.
const MaxTargetLen = 1024

// Kind says what a stream is for.
type Kind uint8

// Stream kinds. Values are part of the wire format: never renumber.
const (
	// KindTCP asks the accepting side to dial Target ("host:port") over
	// TCP and splice the stream to that connection.
	KindTCP Kind = 1
	// KindUDP asks the accepting side to relay datagrams to Target
	// ("host:port"); the stream then carries datagrams framed by
	// WriteDatagram.
	KindUDP Kind = 2
	// KindBind (client to server) asks the server to listen on Target,
	// "tcp:host:port", "udp:host:port" or "socks:host:port", for a reverse
	// remote. The stream stays open as the lease: when it closes, the
	// server closes the listener.
	KindBind Kind = 3
	// KindReverseTCP (server to client) carries a connection accepted on
	// the reverse listener Target (its bind address); the client dials the
	// target of its remote for that bind.
	KindReverseTCP Kind = 4
	// KindReverseUDP (server to client) carries one UDP flow received on
	// the reverse listener Target, framed by WriteDatagram.
	KindReverseUDP Kind = 5
	// KindFile (client to server) carries the file-transfer protocol
	// (package transfer); Target is empty.
	KindFile Kind = 6
)

func (k Kind) String() string {
	switch k {
	case KindTCP:
		return "tcp"
	case KindUDP:
		return "udp"
	case KindBind:
		return "bind"
	case KindReverseTCP:
		return "reverse-tcp"
	case KindReverseUDP:
		return "reverse-udp"
	case KindFile:
		return "file"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Header is the first thing written on every stream by its opener.
//
// Layout: version (1 byte) | kind (1 byte) | target length (2 bytes, big
// endian) | target (UTF-8, at most MaxTargetLen bytes).
type Header struct {
	Kind   Kind
	Target string
}

// ErrHeaderVersion is returned by ReadHeader for a header of a version this
// build does not speak.
var ErrHeaderVersion = errors.New("unsupported stream header version")

// AppendHeader appends the encoding of h to b.
func AppendHeader(b []byte, h Header) ([]byte, error) {
	if len(h.Target) > MaxTargetLen {
		return b, fmt.Errorf("stream target is %d bytes, more than the limit of %d", len(h.Target), MaxTargetLen)
	}
	b = append(b, HeaderVersion, byte(h.Kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Target)))
	return append(b, h.Target...), nil
}

// WriteHeader writes h to w in a single Write.
func WriteHeader(w io.Writer, h Header) error {
	b, err := AppendHeader(make([]byte, 0, 4+len(h.Target)), h)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadHeader reads one header from r. It reads exactly the header's bytes
// and never more, so the payload that follows is left in r.
func ReadHeader(r io.Reader) (Header, error) {
	var fixed [4]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Header{}, fmt.Errorf("reading stream header: %w", err)
	}
	if fixed[0] != HeaderVersion {
		return Header{}, fmt.Errorf("%w %d (this build speaks %d)", ErrHeaderVersion, fixed[0], HeaderVersion)
	}
	n := int(binary.BigEndian.Uint16(fixed[2:]))
	if n > MaxTargetLen {
		return Header{}, fmt.Errorf("stream header target is %d bytes, more than the limit of %d", n, MaxTargetLen)
	}
	target := make([]byte, n)
	if _, err := io.ReadFull(r, target); err != nil {
		return Header{}, fmt.Errorf("reading stream header target: %w", err)
	}
	return Header{Kind: Kind(fixed[1]), Target: string(target)}, nil
}

// Code classifies a refused stream, so that the opener can react (a
// SOCKS5 listener maps it to its own reply codes). Values are part of the
// wire format: never renumber.
type Code uint8

const (
	CodeOK          Code = 0
	CodeFailed      Code = 1 // any other failure
	CodeDenied      Code = 2 // not allowed by the access list
	CodeRefused     Code = 3 // the target refused the connection
	CodeUnreachable Code = 4 // no route, no such host
	CodeTimeout     Code = 5 // the target did not answer in time
	CodeUnsupported Code = 6 // unknown kind, or a mode this end does not serve
	CodeInUse       Code = 7 // a bind address is taken
)

// RemoteError is an error reported by the peer in its reply to a stream
// header, such as "connection refused by db.internal:5432".
type RemoteError struct {
	Code    Code
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// Coded is implemented by errors that know which Code to send.
type Coded interface {
	error
	ReplyCode() Code
}

// Refuse returns an error that WriteReply sends with code c.
func Refuse(c Code, format string, args ...any) error {
	return &RemoteError{Code: c, Message: fmt.Sprintf(format, args...)}
}

// ReplyCode lets a *RemoteError be passed on as it came.
func (e *RemoteError) ReplyCode() Code { return e.Code }

// WriteReply answers a stream header: nil means the stream is accepted and
// payload may flow; a non-nil error's text is sent to the opener, truncated
// to MaxTargetLen bytes, with its Code when it implements Coded and
// CodeFailed otherwise.
//
// Layout: code (1 byte, 0 ok) | message length (2 bytes, big endian) |
// message.
func WriteReply(w io.Writer, replyErr error) error {
	if replyErr == nil {
		_, err := w.Write([]byte{byte(CodeOK), 0, 0})
		return err
	}
	code := CodeFailed
	var coded Coded
	if errors.As(replyErr, &coded) && coded.ReplyCode() != CodeOK {
		code = coded.ReplyCode()
	}
	msg := replyErr.Error()
	if len(msg) > MaxTargetLen {
		msg = strings.ToValidUTF8(msg[:MaxTargetLen], "")
	}
	b := make([]byte, 0, 3+len(msg))
	b = append(b, byte(code))
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	b = append(b, msg...)
	_, err := w.Write(b)
	return err
}

// ReadReply reads the peer's answer to a header. It returns nil when the
// stream was accepted, a *RemoteError when the peer refused it, and any
// other error when the reply could not be read.
func ReadReply(r io.Reader) error {
	var fixed [3]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return fmt.Errorf("reading stream reply: %w", err)
	}
	n := int(binary.BigEndian.Uint16(fixed[1:]))
	if n > MaxTargetLen {
		return fmt.Errorf("stream reply message is %d bytes, more than the limit of %d", n, MaxTargetLen)
	}
	code := Code(fixed[0])
	if code == CodeOK {
		if n != 0 {
			return fmt.Errorf("stream reply: ok status with a %d-byte message", n)
		}
		return nil
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return fmt.Errorf("reading stream reply message: %w", err)
	}
	if code > CodeInUse {
		// A newer peer's code: keep the message, treat it as a failure.
		code = CodeFailed
	}
	return &RemoteError{Code: code, Message: string(msg)}
}
