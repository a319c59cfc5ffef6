package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/burrowtun/burrow/client"
	"github.com/pelletier/go-toml/v2"
	"github.com/urfave/cli/v2"
)

// The config file is TOML with a [server] and a [client] table. Their keys
// are the flag names of the command (dashes or underscores), so every flag
// has a key; [client] adds `server` (the URL) and `remotes` (a list).
// Command-line flags and BURROW_* variables override the file.

func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Usage: "read settings from the TOML `FILE` (flags and BURROW_* variables override it)", EnvVars: []string{"BURROW_CONFIG"}}
}

// configFile is a parsed config file, kept with its text so that errors
// can name lines.
type configFile struct {
	path   string
	text   []byte
	tables map[string]map[string]any
}

func readConfig(path string) (*configFile, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var raw map[string]any
	if err := toml.Unmarshal(text, &raw); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%s:%d:%d: %s", path, row, col, de.Error())
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cf := &configFile{path: path, text: text, tables: map[string]map[string]any{}}
	for name, v := range raw {
		t, ok := v.(map[string]any)
		if !ok || (name != "server" && name != "client") {
			return nil, fmt.Errorf("%s:%d: unknown top-level key %q; settings go in a [server] or [client] table", path, cf.line("", name), name)
		}
		cf.tables[name] = t
	}
	return cf, nil
}

var tableHeader = regexp.MustCompile(`^\s*\[\s*([A-Za-z0-9_-]+)\s*\]`)

// line finds the line where key is set in table ("" for the top level),
// for error messages; 0 when not found.
func (cf *configFile) line(table, key string) int {
	cur := ""
	keyRE := regexp.MustCompile(`^\s*"?` + regexp.QuoteMeta(key) + `"?\s*=`)
	headerRE := regexp.MustCompile(`^\s*\[\s*` + regexp.QuoteMeta(key) + `\s*\]`)
	sc := bufio.NewScanner(bytes.NewReader(cf.text))
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if m := tableHeader.FindStringSubmatch(l); m != nil {
			if table == "" && headerRE.MatchString(l) {
				return n
			}
			cur = m[1]
			continue
		}
		if cur == table && keyRE.MatchString(l) {
			return n
		}
	}
	return 0
}

// configValues turns a TOML value into the strings flag.Value.Set takes.
func configValues(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case bool:
		return []string{strconv.FormatBool(v)}, nil
	case int64:
		return []string{strconv.FormatInt(v, 10)}, nil
	case float64:
		return []string{strconv.FormatFloat(v, 'f', -1, 64)}, nil
	case time.Duration:
		return []string{v.String()}, nil
	case []any:
		var out []string
		for _, e := range v {
			s, err := configValues(e)
			if err != nil {
				return nil, err
			}
			if len(s) != 1 {
				return nil, errors.New("nested lists are not settings")
			}
			out = append(out, s[0])
		}
		return out, nil
	}
	return nil, fmt.Errorf("a %T is not a setting", v)
}

// clientArgKeys are [client] keys that are not flags but the command's
// arguments.
var clientArgKeys = map[string]bool{"server": true, "remotes": true}

// apply sets, from table, every flag of cmd that the command line and the
// environment left unset. set is the flag setter: cli.Context.Set when
// running, a scratch flag.FlagSet when checking. It returns the [client]
// argument keys' values.
func (cf *configFile) apply(table string, flags []cli.Flag, isSet func(string) bool, set func(name, value string) error) (map[string][]string, error) {
	known := map[string]bool{}
	for _, f := range flags {
		for _, n := range f.Names() {
			known[n] = true
		}
	}
	args := map[string][]string{}
	var errs []error
	for key, v := range cf.tables[table] {
		name := strings.ReplaceAll(key, "_", "-")
		where := fmt.Sprintf("%s:%d", cf.path, cf.line(table, key))
		vals, err := configValues(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: [%s] %s: %v", where, table, key, err))
			continue
		}
		if table == "client" && clientArgKeys[name] {
			args[name] = vals
			continue
		}
		if !known[name] || name == "config" || name == "help" {
			errs = append(errs, fmt.Errorf("%s: [%s] has no setting %q; see 'burrow %s --help'", where, table, key, table))
			continue
		}
		if isSet(name) {
			continue
		}
		for _, s := range vals {
			if err := set(name, s); err != nil {
				errs = append(errs, fmt.Errorf("%s: [%s] %s = %v: %v", where, table, key, v, err))
				break
			}
		}
	}
	return args, errors.Join(errs...)
}

// applyConfig loads --config, if given, into the running command's flags.
func applyConfig(c *cli.Context, table string) (map[string][]string, error) {
	path := c.String("config")
	if path == "" {
		return nil, nil
	}
	cf, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return cf.apply(table, c.Command.Flags, c.IsSet, c.Set)
}

// checkConfig validates both tables of a config file against the flags of
// the server and client commands, without running anything.
func checkConfig(path string, commands map[string]*cli.Command) error {
	cf, err := readConfig(path)
	if err != nil {
		return err
	}
	var errs []error
	for table, cmd := range commands {
		if _, ok := cf.tables[table]; !ok {
			continue
		}
		fs := flag.NewFlagSet(table, flag.ContinueOnError)
		for _, f := range cmd.Flags {
			if err := f.Apply(fs); err != nil {
				return err
			}
		}
		args, err := cf.apply(table, cmd.Flags, func(string) bool { return false }, fs.Set)
		if err != nil {
			errs = append(errs, err)
		}
		if table == "client" {
			if r := args["remotes"]; len(r) > 0 {
				if _, err := client.ParseRemotes(r); err != nil {
					errs = append(errs, fmt.Errorf("%s:%d: [client] remotes: %w", path, cf.line("client", "remotes"), err))
				}
			}
			if u := args["server"]; len(u) == 1 {
				if _, err := parseServerURL(u[0]); err != nil {
					errs = append(errs, fmt.Errorf("%s:%d: [client] server: %w", path, cf.line("client", "server"), err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "work with config files",
		Subcommands: []*cli.Command{{
			Name:      "check",
			Usage:     "validate a config file's [server] and [client] tables",
			ArgsUsage: "FILE",
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return errors.New("config check takes one file")
				}
				if err := checkConfig(c.Args().First(), map[string]*cli.Command{
					"server": serverCommand(), "client": clientCommand(),
					"send": sendCommand(), "fetch": fetchCommand(), "ls": lsCommand(),
				}); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "%s: ok\n", c.Args().First())
				return nil
			},
		}},
	}
}
