//go:build !unix

package server

import "os"

// keepOwner: file ownership is not carried over on this system.
func keepOwner(tmp *os.File, path string) {}
