package udp

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// flow, listener, session and test server must be shut down by the test
// that started it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
