package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := newApp(os.Stdin, os.Stdout, os.Stderr)
	err := app.RunContext(ctx, hoistFlags(app, os.Args))
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "burrow: %v\n", err)
		var ec cli.ExitCoder
		if errors.As(err, &ec) && ec.ExitCode() != 0 {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "burrow",
		Usage:     "tunnel TCP through HTTPS-only networks",
		Version:   version(),
		Reader:    stdin,
		Writer:    stdout,
		ErrWriter: stderr,
		// Errors are printed once, by main.
		ExitErrHandler:       func(*cli.Context, error) {},
		EnableBashCompletion: true,
		// Without a command there is nothing to do: the help, and a
		// failure, so that a script that forgot its command notices.
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return cli.Exit(fmt.Sprintf("unknown command %q; run 'burrow help' for the commands", c.Args().First()), 2)
			}
			cli.ShowAppHelp(c)
			return cli.Exit("no command given; run 'burrow help' for the commands", 2)
		},
		Commands: []*cli.Command{
			serverCommand(),
			clientCommand(),
			sendCommand(),
			fetchCommand(),
			lsCommand(),
			certCommand(),
			userCommand(),
			statusCommand(),
			configCommand(),
			completionCommand(),
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					fmt.Fprintln(c.App.Writer, "burrow", version())
					return nil
				},
			},
		},
	}
}

func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return formatVersion(info.Main.Version, info.Settings)
}

// formatVersion is the version a build reports: its module version (a
// tag, or the pseudo-version Go makes from the commit), else "devel", and
// the commit it was built from, marked when the tree had changes.
func formatVersion(module string, settings []debug.BuildSetting) string {
	var rev, modified string
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(len(s.Value), 12)]
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if module == "" || module == "(devel)" {
		module = "devel"
	}
	if rev == "" {
		return module
	}
	return module + " (" + rev + modified + ")"
}
