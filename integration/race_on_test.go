//go:build race

package integration

// raceEnabled reports whether the tests run under the race detector, which
// slows them down and allows at most 8128 live goroutines.
const raceEnabled = true
