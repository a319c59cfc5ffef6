package integration

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDemoInstallsOnlyItsTools: `make demo` installs only what the demo
// runs (deploy/demo.sh), not the proxies and tools the tests drive, which
// took most of its first minutes on a fresh machine.
func TestDemoInstallsOnlyItsTools(t *testing.T) {
	list := func(args ...string) []string {
		t.Helper()
		out, err := exec.Command("bash", append([]string{"../.ci/deps.sh", "--list"}, args...)...).Output()
		if err != nil {
			t.Fatalf("deps.sh --list %s: %v", strings.Join(args, " "), err)
		}
		return strings.Fields(string(out))
	}
	demo, all := list("demo"), list()
	for _, pkg := range []string{"curl", "python3", "coreutils", "diffutils"} {
		if !slices.Contains(demo, pkg) {
			t.Errorf("the demo's packages %q lack %s, which deploy/demo.sh runs", demo, pkg)
		}
	}
	for _, pkg := range []string{"nginx", "haproxy", "nftables", "rsync", "squid-openssl", "mitmproxy", "iperf3"} {
		if slices.Contains(demo, pkg) {
			t.Errorf("the demo's packages %q include %s, which the demo does not use", demo, pkg)
		}
		if !slices.Contains(all, pkg) {
			t.Errorf("the tests' packages %q lack %s", all, pkg)
		}
	}

	// make demo asks for the demo's group only.
	out, err := exec.Command("make", "-C", "..", "-n", "demo").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n demo: %v\n%s", err, out)
	}
	asked := false
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "deps.sh") {
			if !strings.Contains(line, "deps.sh demo") {
				t.Errorf("make demo runs %q, which installs the tests' packages too", strings.TrimSpace(line))
			}
			asked = true
		}
	}
	if !asked {
		t.Errorf("make -n demo does not run .ci/deps.sh demo:\n%s", out)
	}
}
