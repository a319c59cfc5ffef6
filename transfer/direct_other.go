//go:build !linux

package transfer

import "os"

// useDirect: partial files are written through the page cache where
// direct I/O is not known to be supported the same way.
func useDirect(*os.File, int) int { return 0 }

func setDirect(*os.File, bool) error { return nil }
