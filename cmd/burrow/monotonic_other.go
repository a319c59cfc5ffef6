//go:build !unix

package main

// monotonicUsec: there is no systemd here to tell.
func monotonicUsec() (int64, bool) { return 0, false }
