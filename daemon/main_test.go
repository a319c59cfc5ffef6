package daemon

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: Run
// must have ended its serving, admin and watchdog goroutines, and every
// session, when it returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
