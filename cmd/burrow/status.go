package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/burrowtun/burrow/server"
	"github.com/urfave/cli/v2"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "print a running server's sessions and reverse listeners (from its --admin listener)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "admin", Value: "127.0.0.1:9090", Usage: "the server's admin `ADDR`", EnvVars: []string{"BURROW_ADMIN"}},
		},
		Action: func(c *cli.Context) error {
			hc := &http.Client{Timeout: 5 * time.Second}
			resp, err := hc.Get("http://" + c.String("admin") + "/status")
			if err != nil {
				return fmt.Errorf("cannot reach the admin listener at %s: %w; start the server with --admin %s", c.String("admin"), err, c.String("admin"))
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("admin listener at %s answered %s", c.String("admin"), resp.Status)
			}
			var st struct {
				Sessions []server.SessionInfo `json:"sessions"`
				Reverse  []server.BindInfo    `json:"reverse"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				return fmt.Errorf("admin listener at %s: bad status: %w", c.String("admin"), err)
			}
			w := tabwriter.NewWriter(c.App.Writer, 2, 4, 2, ' ', 0)
			fmt.Fprintf(w, "SESSION\tUSER\tSOURCE\tUP\tSTREAMS\n")
			for _, s := range st.Sessions {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\n", s.ID, s.User, s.Source, time.Since(s.Started).Round(time.Second), s.Streams)
			}
			if len(st.Reverse) > 0 {
				fmt.Fprintf(w, "\nREVERSE\tUSER\tSESSION\n")
				for _, b := range st.Reverse {
					fmt.Fprintf(w, "%s\t%s\t%s\n", b.Addr, b.User, b.Session)
				}
			}
			return w.Flush()
		},
	}
}
