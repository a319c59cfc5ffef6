package mux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// FuzzReadHeader feeds arbitrary bytes to ReadHeader. It must never panic,
// must consume exactly the header it decodes, and whatever it decodes must
// encode back to the same bytes: the encoding has one form per header.
func FuzzReadHeader(f *testing.F) {
	for _, h := range []Header{
		{Kind: KindTCP, Target: "127.0.0.1:22"},
		{Kind: KindTCP, Target: "[2001:db8::1]:443"},
		{Kind: KindTCP, Target: ""},
		{Kind: 9, Target: "x"},
		{Kind: KindTCP, Target: strings.Repeat("h", MaxTargetLen)},
	} {
		b, err := AppendHeader(nil, h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, "payload"...))
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte{})
	f.Add([]byte{HeaderVersion})
	f.Add([]byte{0, 1, 0, 0})
	f.Add([]byte{2, 1, 0, 1, 'a'})
	f.Add([]byte{HeaderVersion, 1, 0x04, 0x01})
	f.Add([]byte{HeaderVersion, 1, 0xff, 0xff, 'a'})

	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := ReadHeader(r)
		if err != nil {
			if len(data) >= 4 && data[0] != HeaderVersion && !errors.Is(err, ErrHeaderVersion) {
				t.Fatalf("version byte %d refused with %v, want ErrHeaderVersion", data[0], err)
			}
			return
		}
		if len(h.Target) > MaxTargetLen {
			t.Fatalf("decoded a %d-byte target, over the limit", len(h.Target))
		}
		enc, err := AppendHeader(nil, h)
		if err != nil {
			t.Fatalf("decoded header %+v does not encode: %v", h, err)
		}
		if !bytes.Equal(enc, data[:len(enc)]) {
			t.Fatalf("decoded %+v from % x, which encodes to % x", h, data[:len(enc)], enc)
		}
		if consumed := len(data) - r.Len(); consumed != len(enc) {
			t.Fatalf("ReadHeader consumed %d bytes of a %d-byte header", consumed, len(enc))
		}
	})
}

// FuzzReadReply feeds arbitrary bytes to ReadReply. It must never panic, a
// refusal's message must respect the limit, and what it decodes must encode
// back to the same bytes.
func FuzzReadReply(f *testing.F) {
	for _, e := range []error{
		nil, errors.New("connection refused"), errors.New(""), errors.New(strings.Repeat("e", MaxTargetLen)),
		Refuse(CodeDenied, "not allowed"), Refuse(CodeInUse, "taken"),
	} {
		var b bytes.Buffer
		if err := WriteReply(&b, e); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
		f.Add(append(bytes.Clone(b.Bytes()), "payload"...))
		f.Add(b.Bytes()[:b.Len()-1])
	}
	f.Add([]byte{})
	f.Add([]byte{2, 0, 0})
	f.Add([]byte{200, 0, 1, 'x'})
	f.Add([]byte{0, 0, 1, 'x'})
	f.Add([]byte{1, 0x04, 0x01})
	f.Add([]byte{1, 0xff, 0xff, 'x'})

	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		err := ReadReply(r)
		var replyErr error
		if err != nil {
			var re *RemoteError
			if !errors.As(err, &re) {
				return // malformed or short: refused, which is all we ask
			}
			if len(re.Message) > MaxTargetLen {
				t.Fatalf("decoded a %d-byte message, over the limit", len(re.Message))
			}
			replyErr = re
		}
		var enc bytes.Buffer
		if err := WriteReply(&enc, replyErr); err != nil {
			t.Fatal(err)
		}
		want := bytes.Clone(data[:enc.Len()])
		if want[0] > byte(CodeInUse) {
			want[0] = byte(CodeFailed) // a newer peer's code reads as a failure
		}
		if !bytes.Equal(enc.Bytes(), want) {
			t.Fatalf("decoded %v from % x, which encodes to % x", replyErr, data[:enc.Len()], enc.Bytes())
		}
		if consumed := len(data) - r.Len(); consumed != enc.Len() {
			t.Fatalf("ReadReply consumed %d bytes of a %d-byte reply", consumed, enc.Len())
		}
	})
}

// FuzzFrameWatch reads arbitrary bytes, as yamux frames from a peer,
// through frameWatch in pieces of arbitrary sizes. It must never panic,
// never let a read cross the end of a frame (found here by an independent
// parse of the same bytes), and wake only streams parked on it.
func FuzzFrameWatch(f *testing.F) {
	data := func(id uint32, flags uint16, body int) []byte {
		h := make([]byte, yamuxHeaderSize, yamuxHeaderSize+body)
		h[1] = yamuxTypeData
		binary.BigEndian.PutUint16(h[2:], flags)
		binary.BigEndian.PutUint32(h[4:], id)
		binary.BigEndian.PutUint32(h[8:], uint32(body))
		return append(h, make([]byte, body)...)
	}
	f.Add(append(data(1, 1, 5), data(3, yamuxFlagFIN, 0)...), []byte{3, 200, 1})
	f.Add(data(7, 0, 4000), []byte{12, 1, 255})
	f.Add([]byte{0, 1, 0, 8, 0, 0, 0, 5, 0, 0, 0, 9}, []byte{})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 1, 2}, []byte{5})
	f.Fuzz(func(t *testing.T, wire, sizes []byte) {
		// Frame ends by an independent parse.
		var ends []int
		for pos := 0; pos+yamuxHeaderSize <= len(wire); {
			end := pos + yamuxHeaderSize
			if wire[pos+1] == yamuxTypeData {
				end += int(binary.BigEndian.Uint32(wire[pos+8:]))
			}
			ends = append(ends, end)
			pos = end
		}
		var w frameWatch
		parked := &countWaker{}
		w.add(1, parked)
		buf := make([]byte, 1<<16)
		for pos, i := 0, 0; pos < len(wire); i++ {
			size := len(buf)
			if len(sizes) > 0 {
				size = 1 + int(sizes[i%len(sizes)])
			}
			p := w.limit(buf[:size])
			n := min(len(p), len(wire)-pos)
			if n == 0 {
				t.Fatalf("limit left no room at byte %d", pos)
			}
			for _, end := range ends {
				if pos < end && pos+n > end {
					t.Fatalf("a read of %d bytes at %d crosses the frame end at %d", n, pos, end)
				}
			}
			copy(p, wire[pos:pos+n])
			w.advance(p[:n])
			pos += n
		}
		if parked.n > 1 {
			t.Fatalf("a stream parked once was woken %d times", parked.n)
		}
	})
}
