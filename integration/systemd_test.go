package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/burrowtun/burrow/integration/harness"
)

// The shipped service files, as deploy/install.sh installs them.
var shippedUnits = []string{"burrow-server.service", "burrow-client@.service"}

// maxExposure is the highest 'systemd-analyze security' exposure the units
// may have: 2.5 is where systemd stops calling a unit "OK".
const maxExposure = 2.5

// repoRoot is the checkout the tests run in (they run in integration/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "deploy", "install.sh")); err != nil {
		t.Fatalf("no deploy/install.sh above the integration directory: %v", err)
	}
	return root
}

// runInstallScript runs deploy/install.sh with DESTDIR=destdir and the
// binary under test, and returns what it printed. It fails the test if the
// script fails.
func runInstallScript(t *testing.T, destdir string) string {
	t.Helper()
	out, err := installScript(t, destdir, burrow.Path())
	if err != nil {
		t.Fatalf("deploy/install.sh: %v\n%s", err, out)
	}
	return out
}

func installScript(t *testing.T, destdir, bin string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join(repoRoot(t), "deploy", "install.sh"))
	cmd.Env = append(harness.CleanEnv(), "DESTDIR="+destdir, "BURROW_BIN="+bin)
	cmd.WaitDelay = harness.ExitTimeout
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSystemdInstall runs deploy/install.sh twice into a temporary root: it
// lays out the binary, the units and the sample configs with the intended
// modes, keeps a config the operator changed, and the samples it installs
// pass 'burrow config check'.
func TestSystemdInstall(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	out := runInstallScript(t, root)
	t.Logf("install.sh:\n%s", out)
	for _, want := range []string{"Next steps", "systemctl enable --now burrow-server", "burrow-client@NAME"} {
		if !strings.Contains(out, want) {
			t.Errorf("install.sh output does not mention %q", want)
		}
	}

	files := []struct {
		path string
		mode os.FileMode
	}{
		{"usr/local/bin/burrow", 0o755},
		{"etc/systemd/system/burrow-server.service", 0o644},
		{"etc/systemd/system/burrow-client@.service", 0o644},
		{"etc/burrow", os.ModeDir | 0o750},
		{"etc/burrow/server.toml", 0o640},
		{"etc/burrow/client.toml.sample", 0o640},
		{"var/lib/burrow", os.ModeDir | 0o700},
	}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(root, f.path))
		if err != nil {
			t.Errorf("install.sh did not create /%s: %v", f.path, err)
			continue
		}
		if fi.Mode() != f.mode {
			t.Errorf("/%s has mode %v, want %v", f.path, fi.Mode(), f.mode)
		}
	}
	for _, unit := range shippedUnits {
		installed, err := os.ReadFile(filepath.Join(root, "etc/systemd/system", unit))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(installed, []byte("ExecStart=/usr/local/bin/burrow ")) {
			t.Errorf("installed %s does not start /usr/local/bin/burrow", unit)
		}
	}
	for _, cfg := range []string{"etc/burrow/server.toml", "etc/burrow/client.toml.sample"} {
		out := burrow.Run(t, "", "config", "check", filepath.Join(root, cfg))
		if !strings.HasSuffix(strings.TrimSpace(out), ": ok") {
			t.Errorf("burrow config check /%s printed %q, want ...: ok", cfg, out)
		}
	}

	// Again, over an operator's edit: the edit stays, the new sample goes
	// beside it.
	serverTOML := filepath.Join(root, "etc/burrow/server.toml")
	edited := []byte("[server]\nlisten = \":8443\"\n")
	if err := os.WriteFile(serverTOML, edited, 0o640); err != nil {
		t.Fatal(err)
	}
	out = runInstallScript(t, root)
	if got, _ := os.ReadFile(serverTOML); !bytes.Equal(got, edited) {
		t.Errorf("a second install.sh replaced the edited server.toml with:\n%s", got)
	}
	shipped, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "server.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(serverTOML + ".new"); err != nil || !bytes.Equal(got, shipped) {
		t.Errorf("a second install.sh did not put the shipped sample in server.toml.new (%v)", err)
	}
	if !strings.Contains(out, "/etc/burrow/server.toml kept") {
		t.Errorf("a second install.sh does not say that it kept server.toml:\n%s", out)
	}

	// Without a binary it refuses, saying how to make one.
	out, err = installScript(t, t.TempDir(), filepath.Join(t.TempDir(), "missing"))
	if err == nil {
		t.Errorf("install.sh with no binary succeeded:\n%s", out)
	} else if !strings.Contains(out, "make build") {
		t.Errorf("install.sh with no binary does not say to run make build:\n%s", out)
	}
}

// systemdAnalyze finds systemd-analyze and checks that it works here (in a
// container without systemd as PID 1 its offline modes still do), or
// skips the test saying why.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd): the units are not checked")
	}
	dir := t.TempDir()
	probe := filepath.Join(dir, "burrow-probe.service")
	if err := os.WriteFile(probe, []byte("[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"verify", probe}, {"security", "--offline=true", probe}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("systemd-analyze %s does not work here (%v): %s", args[0], err, out)
		}
	}
	return bin
}

// TestSystemdVerify runs 'systemd-analyze verify' on each unit as
// install.sh installs it, with ExecStart pointing at the installed binary
// (verify checks that it exists). Unknown or misspelt settings are only
// warnings to systemd, so any line about the unit fails the test.
func TestSystemdVerify(t *testing.T) {
	t.Parallel()
	analyze := systemdAnalyze(t)
	root := t.TempDir()
	runInstallScript(t, root)
	bin := filepath.Join(root, "usr/local/bin/burrow")
	dir := t.TempDir()
	for _, unit := range shippedUnits {
		text, err := os.ReadFile(filepath.Join(root, "etc/systemd/system", unit))
		if err != nil {
			t.Fatal(err)
		}
		text = bytes.ReplaceAll(text, []byte("/usr/local/bin/burrow"), []byte(bin))
		if err := os.WriteFile(filepath.Join(dir, unit), text, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The template file itself, and an instance of it as systemctl
	// would load it.
	for _, unit := range append(shippedUnits, "burrow-client@db.service") {
		t.Run(unit, func(t *testing.T) {
			cmd := exec.Command(analyze, "verify", filepath.Join(dir, unit))
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
			}
			base := strings.TrimSuffix(unit, ".service")
			if i := strings.IndexByte(base, '@'); i >= 0 {
				base = base[:i+1]
			}
			for line := range strings.Lines(string(out)) {
				if strings.Contains(line, base) {
					t.Errorf("systemd-analyze verify: %s", strings.TrimSpace(line))
				}
			}
		})
	}
}

var exposureLine = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9]+(?:\.[0-9]+)?) (\S+)`)

// TestSystemdSecurity scores each unit's sandboxing with 'systemd-analyze
// security --offline': each must be at most maxExposure ("OK" or better).
func TestSystemdSecurity(t *testing.T) {
	t.Parallel()
	analyze := systemdAnalyze(t)
	root := t.TempDir()
	runInstallScript(t, root)
	for _, unit := range shippedUnits {
		t.Run(unit, func(t *testing.T) {
			cmd := exec.Command(analyze, "security", "--offline=true", filepath.Join(root, "etc/systemd/system", unit))
			cmd.Dir = t.TempDir()
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("systemd-analyze security: %v\n%s%s", err, &stdout, &stderr)
			}
			if s := strings.TrimSpace(stderr.String()); s != "" {
				t.Errorf("systemd-analyze security warned about %s:\n%s", unit, s)
			}
			m := exposureLine.FindStringSubmatch(stdout.String())
			if m == nil {
				t.Fatalf("no overall exposure level in:\n%s", &stdout)
			}
			exposure, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: exposure %.1f %s", unit, exposure, m[3])
			if exposure > maxExposure {
				t.Errorf("%s: exposure %.1f (%s), want at most %.1f; what counts against it:\n%s",
					unit, exposure, m[3], maxExposure, failedChecks(stdout.String()))
			}
		})
	}
}

// failedChecks keeps the lines of a security report that cost exposure.
func failedChecks(report string) string {
	var b strings.Builder
	for line := range strings.Lines(report) {
		if strings.HasPrefix(line, "✗") {
			b.WriteString(line)
		}
	}
	return b.String()
}
