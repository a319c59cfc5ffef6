//go:build bench

package bench

import (
	"os"
	"testing"

	"github.com/burrowtun/burrow/integration/harness"
)

// burrow is the binary measured, built once by TestMain.
var burrow harness.Burrow

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &burrow)) }
