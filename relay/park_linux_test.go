package relay

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fdOf returns c's file descriptor.
func fdOf(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// waitSocketsParked waits until n directions are parked on p's poller.
func waitSocketsParked(t *testing.T, p *Parking, n int) {
	t.Helper()
	poll := p.poller()
	for deadline := time.Now().Add(testTimeout); poll.count() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d directions parked on sockets, want %d", poll.count(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestParkReusedDescriptor: a direction about to park on socket X when
// the other direction closes X (it finds nothing to take back), while
// another splice's socket Y takes X's descriptor number and parks. The
// late park must neither take Y's place nor be taken for it: it fails on
// the closed X, and Y's data still wakes Y's direction. (Parks recorded
// under the descriptor once lost Y's direction for good.)
func TestParkReusedDescriptor(t *testing.T) {
	p := NewParking(0)
	defer p.Close()
	if p.poller() == nil {
		t.Skip("no socket poller on this platform")
	}
	xPeer, x := tcpPair(t)
	_, aOther := tcpPair(t)
	sA := p.newSplice(x, aOther, nil)
	lateA := sA.ab.parker()
	xfd := fdOf(t, x)

	// The other direction ends: stay, nothing parked to take back, close.
	sA.ab.stay.Store(true)
	sA.ab.unpark()
	x.Close()
	xPeer.Close()

	yPeer, y := tcpPair(t)
	zPeer, z := tcpPair(t)
	if fdOf(t, y) != xfd && fdOf(t, z) != xfd && fdOf(t, yPeer) != xfd && fdOf(t, zPeer) != xfd {
		t.Skipf("descriptor %d was not reused", xfd)
	}
	done := make(chan struct{})
	p.Splice(t.Context(), y, z, func(int64, int64) { close(done) })
	waitSocketsParked(t, p, 2)

	// A's runner resumes and parks on the closed X.
	sA.ab.state.Store(parking)
	if lateA.park(&sA.ab) {
		t.Error("a park on a closed socket succeeded")
	}
	if n := p.poller().count(); n != 2 {
		t.Errorf("after the late park %d directions are parked, want B's 2", n)
	}
	if _, err := io.WriteString(yPeer, "hello\n"); err != nil {
		t.Fatal(err)
	}
	zPeer.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, 6)
	if _, err := io.ReadFull(zPeer, buf); err != nil || string(buf) != "hello\n" {
		t.Fatalf("Y's data after the late park: %q, %v", buf, err)
	}
	yPeer.Close()
	zPeer.Close()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("splice B never ended")
	}
}

// TestParkingCloseWakesSockets: closing a Parking wakes the directions
// parked on sockets, which then go on on goroutines: a splice between two
// sockets still carries data and ends.
func TestParkingCloseWakesSockets(t *testing.T) {
	p := NewParking(0)
	aPeer, a := tcpPair(t)
	bPeer, b := tcpPair(t)
	done := make(chan spliced, 1)
	p.Splice(t.Context(), a, b, func(ab, ba int64) { done <- spliced{ab, ba} })
	waitSocketsParked(t, p, 2)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(aPeer, "after close\n"); err != nil {
		t.Fatal(err)
	}
	bPeer.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, 12)
	if _, err := io.ReadFull(bPeer, buf); err != nil || string(buf) != "after close\n" {
		t.Fatalf("data after the Parking closed: %q, %v", buf, err)
	}
	aPeer.Close()
	bPeer.Close()
	select {
	case got := <-done:
		if got.aToB != 12 {
			t.Errorf("the splice carried %+v, want 12 bytes a to b", got)
		}
	case <-time.After(testTimeout):
		t.Fatal("the splice never ended after the Parking closed")
	}
}

// TestParkingCloseRacesPollerStart: a Parking closed while its first
// socket park is starting the poller closes that poller too (it once read
// the poller before waiting for it to start, and left its goroutine and
// descriptors behind).
func TestParkingCloseRacesPollerStart(t *testing.T) {
	for i := range 3000 {
		p := NewParking(0)
		var wg sync.WaitGroup
		var start atomic.Bool
		wg.Go(func() {
			for !start.Load() {
			}
			p.poller()
		})
		// Close after a varying head start of the poller's first use.
		start.Store(true)
		var spin atomic.Int64
		for range i % 100 * 30 {
			spin.Add(1)
		}
		p.Close()
		wg.Wait()
		p.mu.Lock()
		poll := p.poll
		p.mu.Unlock()
		if poll == nil {
			continue
		}
		select {
		case <-poll.done:
		default:
			poll.close()
			t.Fatal("a Parking closed with its poller running")
		}
	}
}
