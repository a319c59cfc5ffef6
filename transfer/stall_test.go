package transfer

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestStalledTransferEnds: a client that plans a push and then only
// sends keepalives, never a byte of file data, does not hold its transfer
// slot, its destination paths and its quota forever: after StallTimeout
// the server ends the transfer with an error saying so, and the user's
// next transfer is admitted.
func TestStalledTransferEnds(t *testing.T) {
	t.Parallel()
	const stall = 300 * time.Millisecond
	h := newHarness(t, ServerConfig{MaxTransfersPerUser: 1, Limits: Limits{StallTimeout: stall}}, Endpoint{Read: true, Write: true})
	cc, _, err := startPush(t, h, hello{dest: "inbox"}, []Entry{fileEntry("held", 4)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := cc.keepalive(stall / 6)
	_, err = cc.expect(frameEnd)
	stop()
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "moved no file data for 300ms") {
		t.Fatalf("a transfer kept open by keepalives alone: %v, want the server's stall error", err)
	}
	if took < stall {
		t.Errorf("the server ended the stalled transfer after %v, before %v without progress", took, stall)
	}
	// The slot is free again (one per user here): the user's next
	// transfer is admitted and planned. (A whole honest transfer would
	// itself have to move data within the test's 300 ms.)
	var next error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, _, next = startPush(t, h, hello{dest: "inbox"}, []Entry{fileEntry("next", 4)}); !errors.Is(next, ErrBusy) {
			break
		}
	}
	if next != nil {
		t.Fatalf("the user's next transfer after the stalled one ended: %v", next)
	}
}
