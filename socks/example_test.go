package socks_test

import (
	"bytes"
	"fmt"

	"github.com/burrowtun/burrow/mux"
	"github.com/burrowtun/burrow/socks"
)

// Reply turns the far end's refusal into the SOCKS5 reply a client
// understands: a refused connection is reply code 5.
func ExampleReply() {
	var b bytes.Buffer
	socks.Reply(&b, mux.Refuse(mux.CodeRefused, "connection refused by db:5432"))
	fmt.Printf("% x\n", b.Bytes())
	// Output: 05 05 00 01 00 00 00 00 00 00
}
