package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// sampleSetting returns a TOML value for f and the string the flag must
// show after it is applied.
func sampleSetting(t *testing.T, f cli.Flag) (toml, want string) {
	switch f.(type) {
	case *cli.StringFlag:
		return `"sample-value"`, "sample-value"
	case *cli.BoolFlag:
		return "true", "true"
	case *cli.IntFlag:
		return "300000", "300000"
	case *cli.DurationFlag:
		return `"3m7s"`, "3m7s"
	case *cli.StringSliceFlag:
		return `["a: 1", "b: 2"]`, "[a: 1 b: 2]"
	}
	t.Fatalf("flag %s has type %T, which the config file test does not know: add it", f.Names()[0], f)
	return "", ""
}

// TestEveryFlagHasAConfigKey walks the flag sets of the commands that take
// --config and proves that each flag can be set from the file, under its
// own name with dashes and with underscores.
func TestEveryFlagHasAConfigKey(t *testing.T) {
	for _, cmd := range []*cli.Command{serverCommand(), clientCommand()} {
		for _, f := range cmd.Flags {
			name := f.Names()[0]
			if name == "config" {
				continue
			}
			for _, key := range []string{name, strings.ReplaceAll(name, "-", "_")} {
				t.Run(cmd.Name+"/"+key, func(t *testing.T) {
					value, want := sampleSetting(t, f)
					path := filepath.Join(t.TempDir(), "burrow.toml")
					os.WriteFile(path, []byte(fmt.Sprintf("# test\n[%s]\n%s = %s\n", cmd.Name, key, value)), 0o600)
					cf, err := readConfig(path)
					if err != nil {
						t.Fatal(err)
					}
					fs := flag.NewFlagSet(cmd.Name, flag.ContinueOnError)
					for _, f := range cmd.Flags {
						f.Apply(fs)
					}
					if _, err := cf.apply(cmd.Name, cmd.Flags, func(string) bool { return false }, fs.Set); err != nil {
						t.Fatal(err)
					}
					if got := fs.Lookup(name).Value.String(); got != want {
						t.Fatalf("after the file set %s = %s, the flag is %q, want %q", key, value, got, want)
					}
				})
			}
		}
	}
}

func TestConfigFlagsOverrideFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "burrow.toml")
	os.WriteFile(path, []byte("[server]\nlisten = \"127.0.0.1:1\"\npath = \"/from-file\"\n"), 0o600)
	cf, err := readConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	cmd := serverCommand()
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	for _, f := range cmd.Flags {
		f.Apply(fs)
	}
	fs.Set("listen", "127.0.0.1:2") // as if given on the command line
	isSet := func(name string) bool { return name == "listen" }
	if _, err := cf.apply("server", cmd.Flags, isSet, fs.Set); err != nil {
		t.Fatal(err)
	}
	if got := fs.Lookup("listen").Value.String(); got != "127.0.0.1:2" {
		t.Errorf("listen = %q: the file overrode the command line", got)
	}
	if got := fs.Lookup("path").Value.String(); got != "/from-file" {
		t.Errorf("path = %q, want the file's value", got)
	}
}

func TestConfigCheckErrorsNameLines(t *testing.T) {
	tests := []struct {
		name, text string
		want       []string
	}{
		{"syntax", "[server]\nlisten = \n", []string{":2:"}},
		{"unknown key", "[server]\nlisten = \":1\"\n\nbogus = 1\n", []string{":4:", `"bogus"`}},
		{"unknown table", "[servr]\nlisten = \":1\"\n", []string{":1:", "servr"}},
		{"bad value", "[client]\nkeepalive = \"soon\"\n", []string{":2:", "keepalive"}},
		{"bad remote", "[client]\nserver = \"wss://h:1\"\nremotes = [\"R:stdio:x:1\"]\n", []string{":3:", "stdio cannot be reversed"}},
		{"bad url", "[client]\nserver = \"http://h:1\"\n", []string{":2:", "wss://"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "burrow.toml")
			os.WriteFile(path, []byte(tt.text), 0o600)
			err := checkConfig(path, map[string]*cli.Command{"server": serverCommand(), "client": clientCommand()})
			if err == nil {
				t.Fatal("check passed")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	good := filepath.Join(t.TempDir(), "good.toml")
	os.WriteFile(good, []byte("[server]\nlisten = \":443\"\nreverse = true\n[client]\nserver = \"wss://h:443\"\nremotes = [\"5432:db:5432\"]\nauth_file = \"/etc/burrow/client.auth\"\n"), 0o600)
	if err := checkConfig(good, map[string]*cli.Command{"server": serverCommand(), "client": clientCommand()}); err != nil {
		t.Fatalf("a good file failed: %v", err)
	}
}
