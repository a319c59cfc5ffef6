// Package relay carries bytes between a stream and a socket: the splice
// that copies both ways with half-closes passed on ([Pipe], [Splice]),
// the [Parking] where its idle directions wait without a goroutine, and
// the answer to a stream that asks for a TCP connection ([DialTarget],
// [Parking.SpliceTCP]), whose dial error it turns into the reply code the
// opener sees.
//
// What may be dialled is not relay's to decide: the server passes a
// [DialFunc] that applies its dial policy, and the client its plain dialer.
package relay
