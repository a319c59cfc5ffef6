package transfer

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestRootPathNotRevealed: when the server cannot open a user's files
// root, the client learns that, not where the server keeps the files.
func TestRootPathNotRevealed(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "srv-secret-location")
	h := newHarness(t, ServerConfig{}, Endpoint{Root: secret, Read: true, Write: true})
	cl := h.client()
	src := t.TempDir()
	makeTree(t, src, []node{{path: "a.txt", data: []byte("a")}})
	var out bytes.Buffer
	for name, op := range map[string]func() error{
		"list": func() error { _, err := cl.List(context.Background(), ""); return err },
		"send": func() error {
			_, err := cl.Send(context.Background(), []string{filepath.Join(src, "a.txt")}, "in")
			return err
		},
		"fetch": func() error { _, err := cl.FetchStream(context.Background(), "a.txt", &out); return err },
	} {
		err := op()
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		if strings.Contains(err.Error(), "srv-secret-location") {
			t.Errorf("%s: the error names the server's path: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}
