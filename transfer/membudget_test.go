package transfer

import (
	"errors"
	"strings"
	"testing"
)

// TestBufferBudget: each data stream holds up to two chunk-sized buffers,
// and each transfer chose its chunk size (up to 16 MiB) and asked for its
// streams (up to 16): with 64 transfers, the defaults let clients make the
// server hold 32 GiB. The streams a transfer is granted now come out of a
// budget for the whole server, 1 GiB by default; past it, a transfer gets
// fewer streams, or is told the server is busy.
func TestBufferBudget(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ServerConfig{}, Endpoint{Write: true})
	const cs = 16 << 20
	var held int64
	for i := range 3 {
		_, pe, err := startPush(t, h, hello{chunkSize: cs, streams: 16}, nil)
		if err != nil {
			if !errors.Is(err, ErrBusy) {
				t.Fatalf("transfer %d: %v", i, err)
			}
			t.Logf("transfer %d refused: %v", i, err)
			continue
		}
		t.Logf("transfer %d: %d streams", i, pe.streams)
		held += int64(pe.streams) * 2 * cs
	}
	if held > DefaultBufferBudget {
		t.Errorf("the server granted streams holding up to %d MiB, over its budget of %d MiB", held>>20, DefaultBufferBudget>>20)
	}
}

// TestBufferBudgetPerUser: one user's transfers may hold half the
// server's transfer memory, so that they cannot leave another user's
// transfer refused as busy: the user's next transfer is refused, saying
// why, while another user's goes through.
func TestBufferBudgetPerUser(t *testing.T) {
	t.Parallel()
	alice := newHarness(t, ServerConfig{}, Endpoint{User: "alice", Write: true})
	bob := newHarness(t, ServerConfig{}, Endpoint{User: "bob", Write: true})
	bob.srv = alice.srv
	const cs = 16 << 20
	_, pe, err := startPush(t, alice, hello{chunkSize: cs, streams: 16}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := int64(pe.streams)*2*cs, int64(DefaultBufferBudget/2); got != want {
		t.Errorf("alice's first transfer may hold %d MiB, want her half of the budget, %d MiB", got>>20, want>>20)
	}
	_, _, err = startPush(t, alice, hello{chunkSize: cs, streams: 16}, nil)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "user alice's transfers in progress hold their share") {
		t.Fatalf("alice's second transfer: %v, want ErrBusy naming her share", err)
	}
	_, pe, err = startPush(t, bob, hello{chunkSize: cs, streams: 16}, nil)
	if err != nil {
		t.Fatalf("bob's transfer beside alice's: %v", err)
	}
	if pe.streams < 1 {
		t.Errorf("bob's transfer was granted %d streams", pe.streams)
	}
}
