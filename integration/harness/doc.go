// Package harness starts the burrow binary and the real programs the
// integration tests and benchmarks drive: it builds cmd/burrow once per
// test binary (Main), runs burrow servers, clients and short commands as
// separate processes on loopback (Burrow), other programs such as sshd or
// nginx (StartCmd), makes certificates and users files with the binary
// itself, and serves in-process TCP targets (StartTarget, StartEcho).
//
// Nothing here uses a fixed port: every listener binds 127.0.0.1:0 and the
// address it got is read back (from the processes' logs for burrow). Every
// process is stopped by its PID when the test that started it ends, and its
// output is logged when that test fails. Functions that can fail the test
// take a testing.TB and must be called from the test's goroutine; the ones
// that return an error instead may be called from any.
package harness
