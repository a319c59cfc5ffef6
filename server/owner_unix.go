//go:build unix

package server

import (
	"os"
	"syscall"
)

// keepOwner gives tmp the owner and group of the existing file at path,
// when there is one and the process may (root may; others keep their
// own, which is then the file's owner already).
func keepOwner(tmp *os.File, path string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		tmp.Chown(int(st.Uid), int(st.Gid))
	}
}
