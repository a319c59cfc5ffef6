// Package bench is the benchmark harness behind `make bench`:
//
//	go test -tags bench -run '^TestBenchSuite$' -count=1 -timeout 25m -v ./integration/bench/
//
// TestBenchSuite starts everything it measures on loopback (iperf3 -s, two
// throwaway sshd with generated keys and an ssh -L to each, the burrow
// server and client built from this tree, in-process echo and sink
// targets), measures burrow side by side with its baselines, each
// measurement repeated (interleaved, the order of the paths rotated) and
// the medians kept, and writes docs/benchmarks.md and docs/benchmarks.svg:
// throughput, latency, CPU and memory against direct loopback and ssh -L;
// the Go benchmarks; CPU profiles of both ends; idle sessions and streams;
// a simulated long link; the transports beneath the session (HTTP
// streaming and polling against WebSocket, and idle sessions over each
// from burrow client processes); burrow send against scp and rsync. Every process
// it starts is SIGKILLed by PID when it ends. The files: suite_test.go (the
// suite and its sections), procs_test.go (processes and /proc),
// measure_test.go (measurements, profiles, the long link),
// transports_test.go (the transports), transfer_test.go (file
// transfer), report_test.go and
// gaps_test.go (the document and its chart). They are test files behind
// the build tag bench, so that neither make test nor go test ./... runs
// them; what they share with the integration tests (building the binary,
// certificates, users files, targets) is package harness.
//
// Knobs (environment): BENCH_REPEAT (3), BENCH_SECONDS per iperf3 run (2),
// BENCH_LINK (auto: netem in network namespaces when the kernel has it,
// else a delay proxy; or proxy), BENCH_LINK_QDISC (tc arguments for the
// namespaces' veths), BENCH_BUDGET (20m: sections that would start too late
// are skipped and repetitions cut, and the document says so), BENCH_OUT
// (../../docs: the repository's docs, from this folder), BENCH_PROFILES (a
// directory to keep the profiles in), BENCH_CHART=png (a PNG chart instead of SVG), BENCH_ONLY (sections to
// run, comma-separated: throughput, latency, go benchmarks, profile,
// scale, long link, transports, transfers, idle sessions).
//
// The Go benchmarks BenchmarkForwardThroughput and BenchmarkDirectThroughput
// are the same transfer through the real binaries and over plain loopback:
//
//	go test -tags bench -run '^$' -bench 'ForwardThroughput|DirectThroughput' -count 5 ./integration/bench/
package bench
