package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/burrowtun/burrow/server"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

func userCommand() *cli.Command {
	authfile := &cli.StringFlag{Name: "authfile", Aliases: []string{"auth-file"}, Usage: "users `FILE`", Required: true, EnvVars: []string{"BURROW_AUTHFILE"}}
	return &cli.Command{
		Name:  "user",
		Usage: "manage the users file",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a user, or replace one's password and allow list",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{
					authfile,
					&cli.BoolFlag{Name: "password-stdin", Usage: "read the password from the first line of standard input"},
					&cli.StringSliceFlag{Name: "allow", Usage: "regular expression for the host:port targets the user may reach, anchored (repeatable; default: any)"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("user add takes one user name")
					}
					password, err := readPassword(c)
					if err != nil {
						return err
					}
					allow := c.StringSlice("allow")
					if len(allow) == 0 {
						allow = []string{".*"}
					}
					if err := server.AddUser(c.String("authfile"), c.Args().First(), password, allow); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "user %s saved in %s, allowed targets: %s\n", c.Args().First(), c.String("authfile"), strings.Join(allow, " "))
					return nil
				},
			},
			{
				Name:      "remove",
				Usage:     "remove a user",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{authfile},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("user remove takes one user name")
					}
					return server.RemoveUser(c.String("authfile"), c.Args().First())
				},
			},
		},
	}
}

// readPassword reads the new password from stdin (--password-stdin) or
// asks for it twice on the terminal without echo.
func readPassword(c *cli.Context) (string, error) {
	if c.Bool("password-stdin") {
		line, err := bufio.NewReader(c.App.Reader).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", errors.New("--password-stdin: no password on standard input")
		}
		password := strings.TrimRight(line, "\r\n")
		if password == "" {
			return "", errors.New("--password-stdin: the password is empty")
		}
		return password, nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errors.New("standard input is not a terminal; pass --password-stdin to read the password from it")
	}
	fmt.Fprint(c.App.ErrWriter, "password: ")
	first, err := term.ReadPassword(fd)
	fmt.Fprintln(c.App.ErrWriter)
	if err != nil {
		return "", err
	}
	fmt.Fprint(c.App.ErrWriter, "again: ")
	second, err := term.ReadPassword(fd)
	fmt.Fprintln(c.App.ErrWriter)
	if err != nil {
		return "", err
	}
	if string(first) != string(second) {
		return "", errors.New("the passwords do not match")
	}
	if len(first) == 0 {
		return "", errors.New("the password is empty")
	}
	return string(first), nil
}
