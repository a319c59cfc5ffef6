package relay_test

import (
	"fmt"
	"io"
	"net"

	"github.com/burrowtun/burrow/relay"
)

// Pipe joins two connections, here the accepted end of a client's
// connection and one to a server that answers once and hangs up: the
// server's end of file is passed on to the client, and Pipe returns the
// bytes carried each way.
func ExamplePipe() {
	client, accepted := net.Pipe()
	dialed, server := net.Pipe()
	go func() {
		name := make([]byte, 5)
		io.ReadFull(server, name)
		fmt.Fprintf(server, "hello, %s", name)
		server.Close()
	}()
	copied := make(chan [2]int64)
	go func() {
		aToB, bToA := relay.Pipe(accepted, dialed)
		copied <- [2]int64{aToB, bToA}
	}()

	client.Write([]byte("world"))
	reply, _ := io.ReadAll(client)
	fmt.Printf("%s\n", reply)
	n := <-copied
	fmt.Println(n[0], "bytes to the server,", n[1], "back")
	client.Close()
	// Output:
	// hello, world
	// 5 bytes to the server, 12 back
}
