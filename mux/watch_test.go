package mux

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// countWaker counts its wake-ups.
type countWaker struct{ n int }

func (c *countWaker) Wake()    { c.n++ }
func (c *countWaker) CarryOn() { c.n++ }

// TestFrameWatch reads random yamux frames through frameWatch in random
// pieces, as wsConn.Read does, and checks that no read crosses a frame's
// end and that a parked stream is woken by each frame that concerns a
// reader (data, FIN, reset) once that frame has been read whole and the
// next read begins, and by nothing else.
func TestFrameWatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	type frame struct {
		id    uint32
		wakes bool
		n     int // header and body
	}
	var wire []byte
	var frames []frame
	for range 2000 {
		var hdr [yamuxHeaderSize]byte
		typ := byte(rng.IntN(4)) // data, window update, ping, go away
		flags := uint16(0)
		if rng.IntN(4) == 0 {
			flags = []uint16{1, 2, yamuxFlagFIN, yamuxFlagRST}[rng.IntN(4)]
		}
		id := uint32(1 + rng.IntN(5))
		length := uint32(rng.IntN(3) * rng.IntN(3000)) // often 0
		hdr[1] = typ
		binary.BigEndian.PutUint16(hdr[2:], flags)
		binary.BigEndian.PutUint32(hdr[4:], id)
		binary.BigEndian.PutUint32(hdr[8:], length)
		f := frame{id: id, n: yamuxHeaderSize}
		wire = append(wire, hdr[:]...)
		if typ == yamuxTypeData {
			wire = append(wire, make([]byte, length)...)
			f.n += int(length)
			f.wakes = length > 0
		}
		if typ <= yamuxTypeWindowUpdate && flags&(yamuxFlagFIN|yamuxFlagRST) != 0 {
			f.wakes = true
		}
		frames = append(frames, f)
	}

	var w frameWatch
	wakers := map[uint32]*countWaker{}
	for id := uint32(1); id <= 5; id++ {
		wakers[id] = &countWaker{}
		w.add(id, wakers[id])
	}
	want := map[uint32]int{}
	buf := make([]byte, 64<<10)
	pos, fi, fend := 0, 0, frames[0].n // fend: the end of frame fi
	for pos < len(wire) {
		p := w.limit(buf[:1+rng.IntN(len(buf))])
		n := min(len(p), len(wire)-pos, 1+rng.IntN(len(p)))
		copy(p, wire[pos:pos+n])
		if pos+n > fend {
			t.Fatalf("a read of %d bytes at %d crosses the end of frame %d at %d", n, pos, fi, fend)
		}
		w.advance(p[:n])
		pos += n
		for id, c := range wakers {
			if c.n != want[id] {
				t.Fatalf("at byte %d (frame %d): stream %d woken %d times, want %d", pos, fi, id, c.n, want[id])
			}
		}
		if pos == fend {
			// The frame is whole; its wake comes with the next read.
			if frames[fi].wakes {
				want[frames[fi].id]++
			}
			if fi++; fi < len(frames) {
				fend += frames[fi].n
			}
		}
		// A woken stream parks again, as an idle direction would.
		for id, c := range wakers {
			w.add(id, c)
		}
	}
	w.limit(buf) // the read after the last frame
	for id, c := range wakers {
		if c.n != want[id] || want[id] == 0 {
			t.Errorf("stream %d woken %d times, want %d (and some)", id, c.n, want[id])
		}
	}
	w.close()
	if w.add(1, wakers[1]) {
		t.Error("a closed frameWatch took a parked stream")
	}
}
