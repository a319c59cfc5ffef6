package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/burrowtun/burrow/client"
	"github.com/burrowtun/burrow/progress"
	"github.com/burrowtun/burrow/transfer"
	"github.com/urfave/cli/v2"
)

// transferFlags are the flags of send, fetch and ls besides the
// connection flags.
func transferFlags(extra ...cli.Flag) []cli.Flag {
	fl := append([]cli.Flag{configFlag()}, connectionFlags()...)
	fl = append(fl,
		&cli.StringFlag{Name: "control", Usage: "ride the session of a running 'burrow client --control PATH' instead of connecting (no server URL then)", EnvVars: []string{"BURROW_CONTROL"}},
		&cli.BoolFlag{Name: "json", Usage: "report progress as JSON lines (on stdout, or stderr when the data goes to stdout)"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print nothing but errors"},
	)
	fl = append(fl, extra...)
	// Of the session's tuning, what a transfer may want: a shorter
	// keepalive notices a dead link sooner, a larger window fills a long one.
	for _, f := range muxFlags() {
		if n := f.Names()[0]; n == "keepalive" || n == "stream-window" {
			fl = append(fl, f)
		}
	}
	return append(fl, logFlags()...)
}

func moveFlags(toUsage string) []cli.Flag {
	return transferFlags(
		&cli.StringFlag{Name: "to", Value: ".", Usage: toUsage},
		&cli.IntFlag{Name: "parallel", Value: 4, Usage: "data streams per transfer (files and chunks in flight at once)"},
		&cli.BoolFlag{Name: "compress", Usage: "compress chunks with zstd where that makes them smaller"},
		&cli.StringFlag{Name: "overwrite", Value: "never", Usage: "files that exist at the destination: never (refuse, listing them), newer (replace older ones), always, rename (keep both)"},
		&cli.StringFlag{Name: "links", Value: "skip", Usage: "symbolic links inside directories: skip, or keep (only those that stay inside the tree)"},
	)
}

func sendCommand() *cli.Command {
	return &cli.Command{
		Name:      "send",
		Usage:     "copy local files and folders to the server",
		ArgsUsage: "wss://SERVER[:PORT][/PATH] PATH...   ('-' sends standard input as the file --to names)",
		Description: "Files are hashed chunk by chunk and verified as written; a file appears under its\n" +
			"final name only when complete. Run the same command again after an interruption:\n" +
			"only what is missing moves.",
		Flags:  moveFlags("remote `DIR` to copy into (with '-': the remote file to write)"),
		Action: runSend,
	}
}

func fetchCommand() *cli.Command {
	return &cli.Command{
		Name:      "fetch",
		Usage:     "copy files and folders from the server",
		ArgsUsage: "wss://SERVER[:PORT][/PATH] REMOTE-PATH...",
		Description: "Files are verified chunk by chunk and committed atomically; an interrupted fetch\n" +
			"resumes when run again. --to - writes one remote file to standard output.",
		Flags:  moveFlags("local `DIR` to copy into ('-': standard output, one file)"),
		Action: runFetch,
	}
}

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list files on the server",
		ArgsUsage: "wss://SERVER[:PORT][/PATH] [REMOTE-PATH]",
		Flags: append(transferFlags(),
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "show the partial files and journals of unfinished transfers too"}),
		Action: runList,
	}
}

// transferSetup is what every file command needs: a transfer client whose
// streams go to the server, the remaining arguments, and a way to close.
type transferSetup struct {
	tc    *transfer.Client
	args  []string
	log   *slog.Logger
	close func()
}

func setupTransfer(c *cli.Context, section string) (*transferSetup, error) {
	if _, err := applyConfig(c, section); err != nil {
		return nil, err
	}
	log, err := newLogger(c, c.App.ErrWriter)
	if err != nil {
		return nil, err
	}
	args := c.Args().Slice()
	ts := &transferSetup{log: log, close: func() {}, tc: &transfer.Client{}}
	if path := c.String("control"); path != "" {
		ts.args = args
		ts.tc.Open = func(ctx context.Context) (io.ReadWriteCloser, error) {
			return client.DialControl(ctx, path)
		}
		return ts, nil
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("%s needs a server URL first (or --control PATH of a running client)", c.Command.Name)
	}
	serverURL, err := parseServerURL(args[0])
	if err != nil {
		return nil, err
	}
	ts.args = args[1:]
	cfg, err := connectionConfig(c, serverURL, log)
	if err != nil {
		return nil, err
	}
	if cfg.Mux, err = muxConfig(c); err != nil {
		return nil, err
	}
	sess, err := client.Connect(c.Context, cfg)
	if err != nil {
		return nil, err
	}
	ts.close = func() { sess.Close() }
	ts.tc.Open = func(ctx context.Context) (io.ReadWriteCloser, error) { return sess.OpenFile(ctx) }
	return ts, nil
}

// moveOptions applies the flags shared by send and fetch.
func (ts *transferSetup) moveOptions(c *cli.Context) error {
	ow, err := transfer.ParseOverwrite(c.String("overwrite"))
	if err != nil {
		return fmt.Errorf("--overwrite: %w", err)
	}
	links, err := transfer.ParseLinks(c.String("links"))
	if err != nil {
		return fmt.Errorf("--links: %w", err)
	}
	if p := c.Int("parallel"); p < 1 || p > 64 {
		return fmt.Errorf("--parallel %d: want 1 to 64", p)
	}
	ts.tc.Overwrite = ow
	ts.tc.Links = links
	ts.tc.Parallel = c.Int("parallel")
	ts.tc.Compress = c.Bool("compress")
	return nil
}

func runSend(c *cli.Context) error {
	ts, err := setupTransfer(c, "send")
	if err != nil {
		return err
	}
	defer ts.close()
	if err := ts.moveOptions(c); err != nil {
		return err
	}
	if len(ts.args) == 0 {
		return errors.New("send needs the local files or folders to send, e.g. 'burrow send --to inbox/ wss://host:8443 ./report.pdf'")
	}
	to := c.String("to")
	stdin := len(ts.args) == 1 && ts.args[0] == "-"
	// Sending stdin leaves stdout free: --json goes there as always.
	p := newProgress(c, "sent", false)
	ts.tc.Progress = p.Event
	var st transfer.Stats
	if stdin {
		if to == "." || strings.HasSuffix(to, "/") {
			return errors.New("send - needs --to naming the remote file to write, e.g. --to inbox/dir.tar")
		}
		st, err = ts.tc.SendStream(c.Context, c.App.Reader, to)
	} else {
		for _, a := range ts.args {
			if a == "-" {
				return errors.New("send: '-' (standard input) cannot be mixed with other paths")
			}
		}
		st, err = ts.tc.Send(c.Context, ts.args, to)
	}
	return p.Finish(st, err)
}

func runFetch(c *cli.Context) error {
	ts, err := setupTransfer(c, "fetch")
	if err != nil {
		return err
	}
	defer ts.close()
	if err := ts.moveOptions(c); err != nil {
		return err
	}
	if len(ts.args) == 0 {
		return errors.New("fetch needs the remote paths to fetch, e.g. 'burrow fetch --to ./ wss://host:8443 inbox/photos'")
	}
	to := c.String("to")
	stdout := to == "-"
	p := newProgress(c, "received", stdout)
	ts.tc.Progress = p.Event
	var st transfer.Stats
	if stdout {
		if len(ts.args) != 1 {
			return errors.New("fetch --to - writes one file to standard output; name exactly one remote file")
		}
		st, err = ts.tc.FetchStream(c.Context, ts.args[0], c.App.Writer)
	} else {
		st, err = ts.tc.Fetch(c.Context, ts.args, to)
	}
	return p.Finish(st, err)
}

func runList(c *cli.Context) error {
	ts, err := setupTransfer(c, "ls")
	if err != nil {
		return err
	}
	defer ts.close()
	if len(ts.args) > 1 {
		return errors.New("ls takes at most one remote path")
	}
	dir := "."
	if len(ts.args) == 1 {
		dir = ts.args[0]
	}
	entries, err := ts.tc.List(c.Context, dir)
	if err != nil {
		return err
	}
	entries = listing(entries, c.Bool("all"))
	w := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(w)
		for _, e := range entries {
			if err := enc.Encode(jsonEntry(e)); err != nil {
				return err
			}
		}
		return nil
	}
	for _, e := range entries {
		name := e.Path
		if e.Type == transfer.TypeDir {
			name += "/"
		}
		if e.Target != "" {
			name += " -> " + e.Target
		}
		fmt.Fprintf(w, "%s %12d %s %s\n", typeMode(e), e.Size, e.ModTime.Local().Format("2006-01-02 15:04"), name)
	}
	return nil
}

// listing is what ls shows of entries: sorted by name, without the
// partial files and journals of transfers unless all.
func listing(entries []transfer.Entry, all bool) []transfer.Entry {
	if !all {
		entries = slices.DeleteFunc(entries, func(e transfer.Entry) bool { return transfer.IsInternal(path.Base(e.Path)) })
	}
	slices.SortFunc(entries, func(a, b transfer.Entry) int { return strings.Compare(a.Path, b.Path) })
	return entries
}

func typeMode(e transfer.Entry) string {
	m := e.Mode.Perm()
	switch e.Type {
	case transfer.TypeDir:
		m |= os.ModeDir
	case transfer.TypeSymlink:
		m |= os.ModeSymlink
	}
	return m.String()
}

func jsonEntry(e transfer.Entry) map[string]any {
	out := map[string]any{
		"path": e.Path, "type": e.Type.String(), "size": e.Size,
		"mode": fmt.Sprintf("%04o", e.Mode.Perm()), "mtime": e.ModTime.UTC().Format(time.RFC3339Nano),
	}
	if e.Target != "" {
		out["target"] = e.Target
	}
	return out
}

// newProgress shows a transfer on the command's output as --json and
// --quiet ask.
func newProgress(c *cli.Context, verb string, dataOnStdout bool) *progress.Display {
	return progress.New(progress.Options{
		Verb: verb, Quiet: c.Bool("quiet"), JSON: c.Bool("json"),
		Stdout: c.App.Writer, Stderr: c.App.ErrWriter, DataOnStdout: dataOnStdout,
	})
}

// hoistFlags lets send, fetch and ls take flags after their arguments
// too ('burrow send wss://h ./f --to inbox/'), as scp and rsync users
// type them: it moves such flags, with their values, before the first
// argument, where the CLI library looks for them. "--" ends the flags;
// a lone "-" is an argument (standard input or output).
func hoistFlags(app *cli.App, args []string) []string {
	if len(args) < 3 {
		return args
	}
	var cmd *cli.Command
	for _, c := range app.Commands {
		if c.Name == args[1] && (c.Name == "send" || c.Name == "fetch" || c.Name == "ls") {
			cmd = c
		}
	}
	if cmd == nil {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	var flags, positional []string
	rest := args[2:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			positional = append(positional, rest[i:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if takesValue[name] && i+1 < len(rest) {
			i++
			flags = append(flags, rest[i])
		}
	}
	out := append([]string{args[0], args[1]}, flags...)
	return append(out, positional...)
}
