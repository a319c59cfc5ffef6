package socks

import (
	"github.com/burrowtun/burrow/mux"
	"io"
)

// strictReader serves data one byte per Read and records any attempt to
// read past limit.
type strictReader struct {
	data     []byte
	off      int
	limit    int
	overread bool
}

func (r *strictReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.off >= r.limit {
		r.overread = true
	}
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	p[0] = r.data[r.off]
	r.off++
	return 1, nil
}

// codedErr is a mux.Coded error that is not a *mux.RemoteError.
type codedErr struct{ code mux.Code }

func (e codedErr) Error() string       { return "coded failure" }
func (e codedErr) ReplyCode() mux.Code { return e.code }
