//go:build !unix

package server

import "os"

// keepOwner: file ownership is not carried over on this system.
func keepOwner(tmp *os.File, path string) {}

// lockFile: edits of the users file are not locked on this system.
func lockFile(path string) (func(), error) { return func() {}, nil }

// othersMayWrite: file modes say nothing useful on this system.
func othersMayWrite(fi os.FileInfo) bool { return false }
