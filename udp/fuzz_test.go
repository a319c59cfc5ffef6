package udp

import (
	"bytes"
	"testing"
)

// FuzzReadDatagram feeds arbitrary bytes to readDatagram: it must never
// panic or return more than the frame's payload, and what it reads must
// encode back to the same bytes.
func FuzzReadDatagram(f *testing.F) {
	for _, p := range [][]byte{nil, []byte("dns query"), bytes.Repeat([]byte{7}, 1500)} {
		var b bytes.Buffer
		if err := writeDatagram(&b, p); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
		f.Add(append(bytes.Clone(b.Bytes()), 0, 1, 'x'))
		f.Add(b.Bytes()[:b.Len()-1])
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 'x'})

	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		p, err := readDatagram(r, make([]byte, MaxDatagram))
		if err != nil {
			return
		}
		var enc bytes.Buffer
		if err := writeDatagram(&enc, p); err != nil {
			t.Fatalf("read a datagram that does not encode: %v", err)
		}
		if !bytes.Equal(enc.Bytes(), data[:enc.Len()]) {
			t.Fatalf("read %q from % x, which encodes to % x", p, data[:enc.Len()], enc.Bytes())
		}
		if consumed := len(data) - r.Len(); consumed != enc.Len() {
			t.Fatalf("readDatagram consumed %d bytes of a %d-byte frame", consumed, enc.Len())
		}
	})
}
