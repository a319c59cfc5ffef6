package httpconn

import (
	"context"
	"testing"
	"time"
)

// FuzzPollExchange feeds the server's end of a polling connection the
// offsets, bodies and flags a hostile or confused client could send, in
// sequence, and checks that it neither panics nor breaks its bounds: the
// bytes it holds stay within the window, what it has received only grows,
// and an answer never brings more than the room it was given.
func FuzzPollExchange(f *testing.F) {
	f.Add(int64(0), []byte("hello"), int64(0), 1<<20, false, false, int64(3), []byte("lo, world"), int64(0), 16, true, true)
	f.Add(int64(9), []byte("gap"), int64(99), 0, true, false, int64(-1), []byte{}, int64(1<<62), -5, false, true)
	f.Fuzz(func(t *testing.T, up1 int64, body1 []byte, ack1 int64, room1 int, rewind1, fin1 bool,
		up2 int64, body2 []byte, ack2 int64, room2 int, rewind2, fin2 bool) {
		c := &serverConn{conn: newConn(64<<10, addr(""), addr(""))}
		c.onClose = func() {}
		c.Write(make([]byte, 1000)) // something to answer with
		var last int64
		for _, p := range []struct {
			up         int64
			body       []byte
			ack        int64
			room       int
			rewind, fn bool
		}{{up1, body1, ack1, room1, rewind1, fin1}, {up2, body2, ack2, room2, rewind2, fin2}} {
			if p.up < 0 || p.ack < 0 || len(p.body) > MaxBody {
				continue // refused before exchange by the handler's parsing
			}
			room := max(0, min(p.room, MaxBody))
			a, _ := c.exchange(context.Background(), p.up, p.body, p.ack, room, p.rewind, p.fn, time.Now().Add(time.Millisecond))
			c.mu.Lock()
			if c.in.n > c.window || c.inEnd < last || len(a.data) > room || c.sent > c.outEnd() || c.sent < c.outBase {
				t.Fatalf("bounds broken: in %d (window %d), inEnd %d after %d, answer %d bytes for room %d, sent %d in [%d, %d]",
					c.in.n, c.window, c.inEnd, last, len(a.data), room, c.sent, c.outBase, c.outEnd())
			}
			last = c.inEnd
			c.mu.Unlock()
		}
	})
}
