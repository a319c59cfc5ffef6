# Burrow: `make demo` shows it working, `make test` checks everything.
GO      ?= go
BIN     ?= bin/burrow
PKGS    := ./...

.PHONY: all build deps test vet fmt-check unit integration demo bench fuzz dist install clean

all: build

build:
	$(GO) build -trimpath -buildvcs=auto -o $(BIN) ./cmd/burrow

deps:
	bash .ci/deps.sh

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on: $$out"; exit 1; fi

# Everything: static checks, unit tests with the race detector, the
# integration tests that drive the real binary, the vendored yamux's own
# tests as its CI runs them (third_party/yamux/PATCHES.md), and a short run
# of each fuzz target.
test: deps fmt-check vet
	$(GO) test -race -count=1 -timeout 10m $(PKGS)
	cd third_party/yamux && $(GO) vet ./... && $(GO) test -race -short -count=1 ./... && $(GO) test -count=1 ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=3000x

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

integration: build
	$(GO) test -count=1 -v ./integration/

# A server, a client forwarding a port, and a file fetched through it, all
# on loopback with a freshly generated self-signed certificate.
demo: build
	bash .ci/deps.sh demo
	bash deploy/demo.sh $(BIN)

# The benchmark harness (integration/bench, build tag bench): burrow against direct
# loopback and ssh -L (iperf3 throughput, latency, CPU per GiB, memory),
# the Go benchmarks with -benchmem, CPU profiles, idle sessions and streams,
# a simulated long link, HTTP streaming and polling against WebSocket (and
# 1,000 idle sessions over each from burrow client processes), and burrow
# send against scp and rsync; it writes docs/benchmarks.md and
# docs/benchmarks.svg in about a quarter of an hour.
# BENCH_REPEAT, BENCH_SECONDS, BENCH_ONLY and others tune it (see its doc.go).
bench: deps
	$(GO) test -tags bench -run '^TestBenchSuite$$' -count=1 -timeout 25m -v ./integration/bench/

# A duration (30s) or an execution count (3000x). make test uses a count:
# on a loaded machine a short time limit can end a worker mid-input and
# fail with "context deadline exceeded", which says nothing about the code.
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    out=$$($(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg 2>&1) || { echo "$$out"; exit 1; }; \
	  done; \
	done

# The binary, the systemd units and sample configs (never overwriting a
# config); DESTDIR and PREFIX as usual.
install: build
	BURROW_BIN=$(BIN) bash deploy/install.sh

# Static binaries for the platforms people run tunnels on.
DIST_TARGETS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64
dist:
	@mkdir -p dist
	@for t in $(DIST_TARGETS); do \
	  os=$${t%/*}; arch=$${t#*/}; ext=; [ $$os = windows ] && ext=.exe; \
	  echo "dist/burrow-$$os-$$arch$$ext"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '-s -w' \
	    -o dist/burrow-$$os-$$arch$$ext ./cmd/burrow || exit 1; \
	done
	cd dist && sha256sum burrow-* > SHA256SUMS

clean:
	rm -rf bin dist bench.out
