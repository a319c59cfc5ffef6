package httpconn_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/burrowtun/burrow/httpconn"
)

// A server answers the opening request with Accept and every later one
// with Serve; the client's Dial returns its end. Both are net.Conns.
func Example() {
	s := httpconn.NewServer(httpconn.ServerConfig{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := httpconn.Opening(r); ok {
			conn, err := s.Accept(w, r)
			if err == nil {
				go func() { // the answer is complete: the connection lives on
					defer conn.Close()
					io.Copy(conn, conn) // echo
				}()
			}
			return
		}
		if httpconn.Following(r) && s.Serve(w, r) {
			return
		}
		http.NotFound(w, r)
	}))
	defer hs.Close()
	defer s.Close() // first: it ends the polls the server holds

	conn, _, err := httpconn.Dial(context.Background(), hs.URL, httpconn.Poll, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	conn.Write([]byte("hello over polls"))
	buf := make([]byte, 16)
	io.ReadFull(conn, buf)
	fmt.Println(string(buf))
	// Output: hello over polls
}
