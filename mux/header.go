package mux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
	// KindTCP asks the accepting side to dial Target over TCP and splice
	// the stream to that connection.
	KindTCP Kind = 1
)

func (k Kind) String() string {
	switch k {
	case KindTCP:
		return "tcp"
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

// Reply status codes. Values are part of the wire format.
const (
	statusOK    = 0
	statusError = 1
)

// RemoteError is an error reported by the peer in its reply to a stream
// header, such as "dial tcp 10.0.0.5:5432: connection refused".
type RemoteError struct {
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// WriteReply answers a stream header: nil means the stream is accepted and
// payload may flow; a non-nil error's text is sent to the opener, truncated
// to MaxTargetLen bytes.
//
// Layout: status (1 byte, 0 ok, 1 error) | message length (2 bytes, big
// endian) | message.
func WriteReply(w io.Writer, replyErr error) error {
	if replyErr == nil {
		_, err := w.Write([]byte{statusOK, 0, 0})
		return err
	}
	msg := replyErr.Error()
	if len(msg) > MaxTargetLen {
		msg = msg[:MaxTargetLen]
	}
	b := make([]byte, 0, 3+len(msg))
	b = append(b, statusError)
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
	switch fixed[0] {
	case statusOK:
		if n != 0 {
			return fmt.Errorf("stream reply: ok status with a %d-byte message", n)
		}
		return nil
	case statusError:
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			return fmt.Errorf("reading stream reply message: %w", err)
		}
		return &RemoteError{Message: string(msg)}
	}
	return fmt.Errorf("stream reply: unknown status %d", fixed[0])
}
