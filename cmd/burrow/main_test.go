package main

import (
	"bytes"
	"errors"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/burrowtun/burrow/transfer"
	"github.com/urfave/cli/v2"
)

// run runs the app with args and returns its output and error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := newApp(strings.NewReader(""), &out, &errOut)
	err := app.Run(append([]string{"burrow"}, args...))
	return out.String(), err
}

// TestNoCommand: without a command, or with one that does not exist, the
// help or a hint, and a failure a script notices.
func TestNoCommand(t *testing.T) {
	for _, args := range [][]string{nil, {"frob"}} {
		out, err := run(t, args...)
		var ec cli.ExitCoder
		if !errors.As(err, &ec) || ec.ExitCode() != 2 || !strings.Contains(err.Error(), "burrow help") {
			t.Errorf("burrow %v: %v, want exit 2 pointing at 'burrow help'", args, err)
		}
		if args == nil && !strings.Contains(out, "COMMANDS") {
			t.Errorf("burrow with no arguments printed no help:\n%s", out)
		}
	}
}

// TestCertFingerprintIsBare: what 'burrow cert fingerprint' prints is
// what --fingerprint takes, so $(...) works.
func TestCertFingerprintIsBare(t *testing.T) {
	dir := t.TempDir()
	made, err := run(t, "cert", "self-signed", "--out", dir, "--host", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^fingerprint: ([0-9a-f]{64})$`).FindStringSubmatch(made)
	if want == nil {
		t.Fatalf("cert self-signed printed no fingerprint:\n%s", made)
	}
	out, err := run(t, "cert", "fingerprint", filepath.Join(dir, "cert.pem"))
	if err != nil || out != want[1]+"\n" {
		t.Fatalf("cert fingerprint printed %q (%v), want %q", out, err, want[1]+"\n")
	}
}

// TestCompletionFish: fish is offered beside bash and zsh.
func TestCompletionFish(t *testing.T) {
	out, err := run(t, "completion", "fish")
	if err != nil || !strings.Contains(out, "complete -c burrow") || !strings.Contains(out, "send") {
		t.Fatalf("completion fish: %v\n%s", err, out)
	}
}

// TestAuthFileSpellings: the users file and the credentials file answer
// to both spellings, one hyphen apart, on every command that takes one.
func TestAuthFileSpellings(t *testing.T) {
	app := newApp(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	for _, c := range app.Commands {
		for _, f := range flagsOf(c) {
			names := strings.Join(f.Names(), " ")
			if strings.Contains(names, "authfile") != strings.Contains(names, "auth-file") {
				t.Errorf("burrow %s: flag %q lacks its other spelling", c.Name, names)
			}
		}
	}
}

func flagsOf(c *cli.Command) []cli.Flag {
	flags := append([]cli.Flag{}, c.Flags...)
	for _, sub := range c.Subcommands {
		flags = append(flags, flagsOf(sub)...)
	}
	return flags
}

// TestListing: ls shows the user's files sorted, without the partial
// files and journals of unfinished transfers unless --all.
func TestListing(t *testing.T) {
	entries := []transfer.Entry{
		{Path: "zeta.txt"}, {Path: ".big.bin.0123456789abcdef.part"}, {Path: "alpha/", Type: transfer.TypeDir},
		{Path: ".big.bin.0123456789abcdef.journal"}, {Path: ".profile"}, {Path: "big.bin.part"},
	}
	var names []string
	for _, e := range listing(slices.Clone(entries), false) {
		names = append(names, e.Path)
	}
	if got, want := strings.Join(names, " "), ".profile alpha/ big.bin.part zeta.txt"; got != want {
		t.Errorf("ls shows %q, want %q", got, want)
	}
	if n := len(listing(slices.Clone(entries), true)); n != len(entries) {
		t.Errorf("ls --all shows %d entries, want all %d", n, len(entries))
	}
}

// TestVersion: a build says which commit it came from, and whether its
// tree was changed, and never "(devel)" alone.
func TestVersion(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "f533b36ad9e8fa5c7e7925685fb9e6c76460ab66"}, {Key: "vcs.modified", Value: "false"}}
	dirty := []debug.BuildSetting{{Key: "vcs.revision", Value: "f533b36ad9e8fa5c"}, {Key: "vcs.modified", Value: "true"}}
	for _, tc := range []struct {
		module   string
		settings []debug.BuildSetting
		want     string
	}{
		{"v1.2.0", rev, "v1.2.0 (f533b36ad9e8)"},
		{"v0.0.0-20261204025620-f533b36ad9e8", dirty, "v0.0.0-20261204025620-f533b36ad9e8 (f533b36ad9e8, modified)"},
		{"(devel)", rev, "devel (f533b36ad9e8)"},
		{"(devel)", nil, "devel"},
	} {
		if got := formatVersion(tc.module, tc.settings); got != tc.want {
			t.Errorf("formatVersion(%q) = %q, want %q", tc.module, got, tc.want)
		}
	}
}
