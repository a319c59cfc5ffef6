// Package relay carries bytes between a stream and a socket: the splice
// that copies both ways and passes half-closes on, and failures as
// resets ([Pipe], [Parking.Splice]), the [Parking] where its idle
// directions wait without a goroutine, and the answer to a stream that
// asks for a TCP connection ([Parking.SpliceTCP], [DialTarget]), whose
// dial error it turns into the reply code the opener sees.
//
// What may be dialled is not relay's to decide: the server passes a
// [DialFunc] that applies its dial policy, the client its plain dialer.
package relay
