//go:build !linux

package relay

import "io"

// waitConn reports that src cannot wait for data without a buffer: the
// caller reads into a small one instead.
func waitConn(src io.Reader) (waited bool, err error) {
	return false, nil
}
