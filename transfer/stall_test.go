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
// next transfer goes through.
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
	if took < stall || took > 20*stall {
		t.Errorf("the server ended the stalled transfer after %v, want about %v", took, stall)
	}
	checkStillServing(t, h)
}
