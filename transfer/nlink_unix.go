//go:build unix

package transfer

import (
	"io/fs"
	"syscall"
)

// nlink is the number of names fi's file has.
func nlink(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}
