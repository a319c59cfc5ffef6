package transfer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/burrowtun/burrow/transfer"
)

// A Server serves the streams a Client opens. Here each stream is one end
// of a net.Pipe; over Burrow it is a yamux stream of kind "file", and the
// server package calls ServeFiles with the authenticated user.
func Example() {
	dir, _ := os.MkdirTemp("", "transfer-example")
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "server-root")
	os.Mkdir(root, 0o755)
	os.WriteFile(filepath.Join(dir, "report.txt"), []byte("quarterly numbers\n"), 0o644)

	srv := transfer.NewServer(transfer.ServerConfig{
		Lookup: func(user string) (transfer.Endpoint, error) {
			if user != "alice" {
				return transfer.Endpoint{}, fmt.Errorf("user %s has no files here", user)
			}
			return transfer.Endpoint{Root: root, Read: true, Write: true, MaxBytes: 1 << 30}, nil
		},
	})
	var wg sync.WaitGroup
	defer wg.Wait()
	cl := &transfer.Client{
		Open: func(ctx context.Context) (io.ReadWriteCloser, error) {
			c, s := net.Pipe()
			wg.Go(func() {
				defer s.Close()
				srv.ServeFiles(context.Background(), "alice", s)
			})
			return c, nil
		},
		Progress: func(e transfer.Event) {
			if e.Kind == transfer.EventFileDone {
				fmt.Println(e.Kind, e.Path, e.Size)
			}
		},
	}
	ctx := context.Background()

	st, err := cl.Send(ctx, []string{filepath.Join(dir, "report.txt")}, "inbox")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.Files, "file,", st.Bytes, "bytes")

	entries, err := cl.List(ctx, "inbox")
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range entries {
		fmt.Println(e.Type, e.Path, e.Size)
	}

	// Sending again is a no-op: the file is identical. Changing it and
	// sending again is refused, since the default policy never
	// overwrites.
	os.WriteFile(filepath.Join(dir, "report.txt"), []byte("revised numbers\n"), 0o644)
	_, err = cl.Send(ctx, []string{filepath.Join(dir, "report.txt")}, "inbox")
	fmt.Println(errors.Is(err, transfer.ErrConflict))

	var out strings.Builder
	if _, err := cl.FetchStream(ctx, "inbox/report.txt", &out); err != nil {
		log.Fatal(err)
	}
	fmt.Print(out.String())
	// Output:
	// done report.txt 18
	// 1 file, 18 bytes
	// file report.txt 18
	// true
	// done report.txt 18
	// quarterly numbers
}

// A conflict error lists the files in the way, before any data moves.
func ExampleConflictError() {
	err := error(&transfer.ConflictError{Paths: []string{"a.txt", "b.txt"}, Total: 2})
	var ce *transfer.ConflictError
	if errors.As(err, &ce) {
		fmt.Println(ce.Paths)
	}
	fmt.Println(err)
	// Output:
	// [a.txt b.txt]
	// 2 files already exist at the destination: a.txt, b.txt; choose another overwrite policy (newer, always, rename) or move them away
}
