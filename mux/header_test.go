package mux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// countingWriter records each Write so tests can check that headers and
// replies leave in a single call.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

func TestHeaderRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		h    Header
	}{
		{"tcp ipv4", Header{Kind: KindTCP, Target: "127.0.0.1:22"}},
		{"tcp hostname", Header{Kind: KindTCP, Target: "db.internal:5432"}},
		{"tcp ipv6", Header{Kind: KindTCP, Target: "[2001:db8::1]:443"}},
		{"tcp ipv6 zone", Header{Kind: KindTCP, Target: "[fe80::1%eth0]:22"}},
		{"tcp utf8 name", Header{Kind: KindTCP, Target: "bücher.example:80"}},
		{"empty target", Header{Kind: KindTCP}},
		{"max length", Header{Kind: KindTCP, Target: strings.Repeat("a", MaxTargetLen)}},
		// Kinds this build does not know still decode: the receiver
		// decides what to refuse, and answers with a reply.
		{"unknown kind", Header{Kind: 200, Target: "x:1"}},
		{"zero kind", Header{Kind: 0, Target: "x:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			prefix := []byte("prefix")
			b, err := AppendHeader(prefix, tt.h)
			if err != nil {
				t.Fatalf("AppendHeader: %v", err)
			}
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatalf("AppendHeader clobbered the buffer it appends to: %q", b)
			}
			enc := b[len(prefix):]
			if len(enc) != 4+len(tt.h.Target) {
				t.Fatalf("encoded length = %d, want %d", len(enc), 4+len(tt.h.Target))
			}
			if enc[0] != HeaderVersion || Kind(enc[1]) != tt.h.Kind ||
				int(binary.BigEndian.Uint16(enc[2:4])) != len(tt.h.Target) ||
				string(enc[4:]) != tt.h.Target {
				t.Fatalf("layout of %+v: got % x", tt.h, enc)
			}

			var w countingWriter
			if err := WriteHeader(&w, tt.h); err != nil {
				t.Fatalf("WriteHeader: %v", err)
			}
			if w.writes != 1 || !bytes.Equal(w.Bytes(), enc) {
				t.Fatalf("WriteHeader made %d writes of % x, want 1 write of % x", w.writes, w.Bytes(), enc)
			}

			// The payload after the header stays in the reader.
			payload := []byte("payload follows")
			r := bytes.NewReader(append(w.Bytes(), payload...))
			got, err := ReadHeader(r)
			if err != nil {
				t.Fatalf("ReadHeader: %v", err)
			}
			if got != tt.h {
				t.Fatalf("ReadHeader = %+v, want %+v", got, tt.h)
			}
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(rest, payload) {
				t.Fatalf("after the header the reader holds %q, want %q", rest, payload)
			}
		})
	}
}

// TestReadHeaderOneByteAtATime checks ReadHeader over a reader that hands
// out a byte per call, as a slow stream might, and that it stops exactly at
// the end of the header.
func TestReadHeaderOneByteAtATime(t *testing.T) {
	t.Parallel()
	h := Header{Kind: KindTCP, Target: "[::1]:8080"}
	enc, err := AppendHeader(nil, h)
	if err != nil {
		t.Fatal(err)
	}
	r := &strictReader{data: append(enc, "PAYLOAD"...), limit: len(enc)}
	got, err := ReadHeader(r)
	if err != nil {
		t.Fatalf("ReadHeader: %v", err)
	}
	if got != h {
		t.Fatalf("ReadHeader = %+v, want %+v", got, h)
	}
	if r.overread {
		t.Fatalf("ReadHeader asked for bytes past the header")
	}
}

// strictReader serves data one byte per Read and records any attempt to
// read past limit.
type strictReader struct {
	data     []byte
	off      int
	limit    int
	overread bool
}

func (r *strictReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.off >= r.limit {
		r.overread = true
	}
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	p[0] = r.data[r.off]
	r.off++
	return 1, nil
}

func TestAppendHeaderTooLong(t *testing.T) {
	t.Parallel()
	h := Header{Kind: KindTCP, Target: strings.Repeat("a", MaxTargetLen+1)}
	b, err := AppendHeader([]byte("keep"), h)
	if err == nil {
		t.Fatal("AppendHeader accepted a target longer than MaxTargetLen")
	}
	if string(b) != "keep" {
		t.Fatalf("AppendHeader returned %q on error, want the input unchanged", b)
	}
	var w countingWriter
	if err := WriteHeader(&w, h); err == nil {
		t.Fatal("WriteHeader accepted a target longer than MaxTargetLen")
	}
	if w.writes != 0 {
		t.Fatalf("WriteHeader wrote %d times for a header it refused", w.writes)
	}
}

func TestReadHeaderErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		in          []byte
		wantVersion bool // errors.Is(err, ErrHeaderVersion)
		wantText    string
	}{
		{"version 0", []byte{0, 1, 0, 0}, true, "unsupported stream header version 0"},
		{"version 2", []byte{2, 1, 0, 3, 'a', ':', '1'}, true, "unsupported stream header version 2"},
		{"version 255", []byte{255, 255, 255, 255}, true, "version 255"},
		{"length limit+1", []byte{HeaderVersion, 1, 0x04, 0x01}, false, "1025 bytes"},
		{"length 65535", []byte{HeaderVersion, 1, 0xff, 0xff}, false, "65535 bytes"},
		{"empty input", nil, false, "reading stream header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Any bytes after the fixed part must not be asked for when
			// the fixed part is already wrong.
			r := &strictReader{data: slices.Concat(tt.in, make([]byte, 70000)), limit: 4}
			if len(tt.in) == 0 {
				r = &strictReader{limit: 0}
			}
			_, err := ReadHeader(r)
			if err == nil {
				t.Fatal("ReadHeader accepted bad input")
			}
			if got := errors.Is(err, ErrHeaderVersion); got != tt.wantVersion {
				t.Errorf("errors.Is(%v, ErrHeaderVersion) = %v, want %v", err, got, tt.wantVersion)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not mention %q", err, tt.wantText)
			}
			if len(tt.in) > 0 && r.overread {
				t.Errorf("ReadHeader read past the fixed part of a header it refused")
			}
		})
	}
}

func TestReadHeaderTruncated(t *testing.T) {
	t.Parallel()
	enc, err := AppendHeader(nil, Header{Kind: KindTCP, Target: "[2001:db8::1]:443"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(enc) {
		_, err := ReadHeader(bytes.NewReader(enc[:i]))
		if err == nil {
			t.Fatalf("ReadHeader accepted a header cut at byte %d of %d", i, len(enc))
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: error %v does not wrap io.EOF or io.ErrUnexpectedEOF", i, err)
		}
	}
}

// TestReadHeaderRefusesBeforeAllocating checks that a length field above
// MaxTargetLen costs nothing: the header is refused before a buffer of that
// size is made.
func TestReadHeaderRefusesBeforeAllocating(t *testing.T) {
	// Not parallel: it measures the process's allocations.
	in := []byte{HeaderVersion, byte(KindTCP), 0xff, 0xff}
	const runs = 1000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := ReadHeader(bytes.NewReader(in)); err == nil {
			t.Fatal("ReadHeader accepted a 65535-byte target")
		}
	}
	runtime.ReadMemStats(&after)
	// Allocating the target would cost 64 KiB a call; the error alone is
	// a few hundred bytes.
	if perCall := (after.TotalAlloc - before.TotalAlloc) / runs; perCall > 4096 {
		t.Fatalf("ReadHeader allocated %d bytes per refused header; it should refuse before allocating the target", perCall)
	}
}

func TestKindString(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		k    Kind
		want string
	}{{KindTCP, "tcp"}, {0, "kind(0)"}, {7, "kind(7)"}} {
		if got := tt.k.String(); got != tt.want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(tt.k), got, tt.want)
		}
	}
}

func TestReplyRoundTrip(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", MaxTargetLen+500)
	tests := []struct {
		name    string
		err     error
		wire    []byte // nil: not checked
		wantMsg string // for a refusal
	}{
		{"ok", nil, []byte{0, 0, 0}, ""},
		{"refused", errors.New("dial tcp 10.0.0.5:5432: connection refused"), nil, "dial tcp 10.0.0.5:5432: connection refused"},
		{"wrapped refusal", fmt.Errorf("target %s not allowed: %w", "10.0.0.1:22", errors.New("denied")), nil, "target 10.0.0.1:22 not allowed: denied"},
		{"empty message", errors.New(""), []byte{1, 0, 0}, ""},
		{"max length", errors.New(strings.Repeat("m", MaxTargetLen)), nil, strings.Repeat("m", MaxTargetLen)},
		{"truncated", errors.New(long), nil, long[:MaxTargetLen]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var w countingWriter
			if err := WriteReply(&w, tt.err); err != nil {
				t.Fatalf("WriteReply: %v", err)
			}
			if w.writes != 1 {
				t.Fatalf("WriteReply made %d writes, want 1", w.writes)
			}
			if tt.wire != nil && !bytes.Equal(w.Bytes(), tt.wire) {
				t.Fatalf("wire = % x, want % x", w.Bytes(), tt.wire)
			}
			if tt.err != nil {
				enc := w.Bytes()
				if enc[0] != 1 || int(binary.BigEndian.Uint16(enc[1:3])) != len(tt.wantMsg) || len(enc) != 3+len(tt.wantMsg) {
					t.Fatalf("layout of refusal: % x", enc[:3])
				}
			}

			payload := []byte("payload")
			r := bytes.NewReader(append(w.Bytes(), payload...))
			err := ReadReply(r)
			if tt.err == nil {
				if err != nil {
					t.Fatalf("ReadReply = %v, want nil", err)
				}
			} else {
				var re *RemoteError
				if !errors.As(err, &re) {
					t.Fatalf("ReadReply = %v (%T), want a *RemoteError", err, err)
				}
				if re.Message != tt.wantMsg || re.Error() != tt.wantMsg {
					t.Fatalf("RemoteError message = %q, want %q", re.Message, tt.wantMsg)
				}
			}
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(rest, payload) {
				t.Fatalf("after the reply the reader holds %q, want %q", rest, payload)
			}
		})
	}
}

func TestReadReplyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       []byte
		wantText string
	}{
		{"empty", nil, "reading stream reply"},
		{"ok with message", []byte{0, 0, 2, 'h', 'i'}, "ok status with a 2-byte message"},
		{"length limit+1", []byte{1, 0x04, 0x01}, "1025 bytes"},
		{"length 65535", []byte{1, 0xff, 0xff}, "65535 bytes"},
		{"unknown code, length 65535", []byte{200, 0xff, 0xff}, "65535 bytes"},
		{"message cut short", []byte{1, 0, 5, 'a', 'b'}, "reading stream reply message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ReadReply(bytes.NewReader(tt.in))
			if err == nil {
				t.Fatal("ReadReply accepted bad input")
			}
			var re *RemoteError
			if errors.As(err, &re) {
				t.Fatalf("ReadReply = *RemoteError %q for a malformed reply; it must be a local error", re.Message)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("error %q does not mention %q", err, tt.wantText)
			}
		})
	}
}

func TestReadReplyTruncated(t *testing.T) {
	t.Parallel()
	var w bytes.Buffer
	if err := WriteReply(&w, errors.New("connection refused")); err != nil {
		t.Fatal(err)
	}
	enc := w.Bytes()
	for i := range len(enc) {
		err := ReadReply(bytes.NewReader(enc[:i]))
		var re *RemoteError
		if err == nil || errors.As(err, &re) {
			t.Fatalf("ReadReply of a reply cut at byte %d of %d = %v, want a read error", i, len(enc), err)
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: error %v does not wrap io.EOF or io.ErrUnexpectedEOF", i, err)
		}
	}
}

// codedErr is a Coded error that is not a *RemoteError.
type codedErr struct{ code Code }

func (e codedErr) Error() string   { return "coded failure" }
func (e codedErr) ReplyCode() Code { return e.code }

func TestReplyCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		err      error
		wantCode Code
		wantMsg  string
	}{
		{"plain error", errors.New("boom"), CodeFailed, "boom"},
		{"failed", Refuse(CodeFailed, "boom"), CodeFailed, "boom"},
		{"denied", Refuse(CodeDenied, "target %s is not allowed", "10.0.0.1:22"), CodeDenied, "target 10.0.0.1:22 is not allowed"},
		{"refused", Refuse(CodeRefused, "connection refused by db:5432"), CodeRefused, "connection refused by db:5432"},
		{"unreachable", Refuse(CodeUnreachable, "cannot resolve nowhere.invalid: no such host"), CodeUnreachable, "cannot resolve nowhere.invalid: no such host"},
		{"timeout", Refuse(CodeTimeout, "timed out"), CodeTimeout, "timed out"},
		{"unsupported", Refuse(CodeUnsupported, "kind 9"), CodeUnsupported, "kind 9"},
		{"in use", Refuse(CodeInUse, "address in use"), CodeInUse, "address in use"},
		{"wrapped coded", fmt.Errorf("bind: %w", Refuse(CodeInUse, "address in use")), CodeInUse, "bind: address in use"},
		{"other Coded type", codedErr{CodeDenied}, CodeDenied, "coded failure"},
		// A refusal can never be sent as success.
		{"coded ok", codedErr{CodeOK}, CodeFailed, "coded failure"},
		{"remote error ok", &RemoteError{Code: CodeOK, Message: "odd"}, CodeFailed, "odd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var w bytes.Buffer
			if err := WriteReply(&w, tt.err); err != nil {
				t.Fatal(err)
			}
			if got := Code(w.Bytes()[0]); got != tt.wantCode {
				t.Fatalf("code on the wire = %d, want %d", got, tt.wantCode)
			}
			var re *RemoteError
			if err := ReadReply(&w); !errors.As(err, &re) {
				t.Fatalf("ReadReply = %v, want a *RemoteError", err)
			}
			if re.Code != tt.wantCode || re.Message != tt.wantMsg {
				t.Fatalf("ReadReply = %+v, want code %d and message %q", *re, tt.wantCode, tt.wantMsg)
			}
			// A relay passes a refusal on as it came.
			var relayed bytes.Buffer
			if err := WriteReply(&relayed, re); err != nil {
				t.Fatal(err)
			}
			if err := ReadReply(&relayed); !errors.As(err, &re) || re.Code != tt.wantCode {
				t.Fatalf("relayed refusal = %v, want code %d", err, tt.wantCode)
			}
		})
	}
}

// TestReadReplyUnknownCode checks that a code from a newer peer is read as
// a plain failure with its message intact, not as a malformed reply.
func TestReadReplyUnknownCode(t *testing.T) {
	t.Parallel()
	for _, code := range []byte{byte(CodeInUse) + 1, 200, 255} {
		in := []byte{code, 0, 3, 'n', 'e', 'w', 'P'}
		r := bytes.NewReader(in)
		err := ReadReply(r)
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != CodeFailed || re.Message != "new" {
			t.Errorf("code %d: ReadReply = %v, want a CodeFailed *RemoteError %q", code, err, "new")
		}
		if r.Len() != 1 {
			t.Errorf("code %d: ReadReply left %d bytes, want the 1 after the reply", code, r.Len())
		}
	}
}
