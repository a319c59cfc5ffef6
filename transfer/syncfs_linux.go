package transfer

import (
	"os"

	"golang.org/x/sys/unix"
)

// canSyncFS says whether syncFS exists here, which lets small files be
// committed in batches.
const canSyncFS = true

// syncFS makes everything written to the filesystem holding root durable
// (syncfs(2)).
func syncFS(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}
