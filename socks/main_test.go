package socks

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait in these tests so that a bug fails a test
// instead of hanging the run. It is no performance bound.
const testTimeout = 60 * time.Second
