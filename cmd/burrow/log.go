package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/urfave/cli/v2"
)

func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"BURROW_LOG_LEVEL"}},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json", EnvVars: []string{"BURROW_LOG_FORMAT"}},
	}
}

func newLogger(c *cli.Context, w io.Writer) (*slog.Logger, error) {
	return newLoggerAt(c, w, c.String("log-level"))
}

// newLoggerAt is newLogger whose level is def unless --log-level (or the
// configuration file) says otherwise.
func newLoggerAt(c *cli.Context, w io.Writer, def string) (*slog.Logger, error) {
	name := def
	if c.IsSet("log-level") {
		name = c.String("log-level")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(name)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.String("log-format")) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", c.String("log-format"))
}
