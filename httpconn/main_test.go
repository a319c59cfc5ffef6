package httpconn

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// connection's requests must end once both ends are closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
