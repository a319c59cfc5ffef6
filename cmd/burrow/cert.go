package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/burrowtun/burrow/certs"
	"github.com/urfave/cli/v2"
)

func certCommand() *cli.Command {
	return &cli.Command{
		Name:  "cert",
		Usage: "make and inspect TLS certificates",
		Subcommands: []*cli.Command{
			{
				Name:  "self-signed",
				Usage: "write a self-signed cert.pem and key.pem and print the fingerprint clients pin",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "host", Usage: "DNS name or IP address the certificate is valid for (repeatable)", Required: true},
					&cli.StringFlag{Name: "out", Value: ".", Usage: "`DIR` to write cert.pem and key.pem into"},
					&cli.DurationFlag{Name: "valid", Value: 825 * 24 * time.Hour, Usage: "validity period"},
					&cli.BoolFlag{Name: "force", Usage: "overwrite existing files"},
				},
				Action: func(c *cli.Context) error {
					certPEM, keyPEM, err := certs.GenerateSelfSigned(c.StringSlice("host"), c.Duration("valid"))
					if err != nil {
						return err
					}
					certPath, keyPath, err := certs.WriteKeyPair(c.String("out"), certPEM, keyPEM, c.Bool("force"))
					if err != nil {
						return err
					}
					fp, err := certs.FingerprintPEM(certPEM)
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "certificate: %s\nkey: %s\nfingerprint: %s\n", certPath, keyPath, fp)
					return nil
				},
			},
			{
				Name:      "fingerprint",
				Usage:     "print the fingerprint of a certificate file, the value clients pass to --fingerprint",
				ArgsUsage: "CERT.pem",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("cert fingerprint takes one certificate file")
					}
					data, err := os.ReadFile(c.Args().First())
					if err != nil {
						return err
					}
					fp, err := certs.FingerprintPEM(data)
					if err != nil {
						return fmt.Errorf("%s: %w", c.Args().First(), err)
					}
					fmt.Fprintln(c.App.Writer, fp) // bare, for --fingerprint "$(burrow cert fingerprint cert.pem)"
					return nil
				},
			},
		},
	}
}
