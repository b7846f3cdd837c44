# Raftor's everyday commands. `make test` is what CI runs.
GO ?= go
PKGS ?= ./...

.PHONY: all build test vet fmt-check proto proto-check bench bench-run bench-peers sim run clean

all: build

build:
	$(GO) build $(PKGS)

# Packages with tests that run several protoactor remotes in one process.
# The pinned protoactor's Remote.Start rewrites gRPC's global logger, which
# the race detector reports against any remote already serving; those tests
# are built with `!race` and run in a second pass without it.
NORACE_PKGS ?= ./remote/... ./cluster ./cluster/clustertest/... ./examples/orders

# vet, formatting, the .proto drift check and every test under the race
# detector, then the multi-remote tests without it.
test: vet fmt-check
	$(GO) test -race -count=1 -timeout 18m $(PKGS)
	$(GO) test -count=1 -timeout 10m $(NORACE_PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '\.pb\.go$$' || true); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Regenerate messages/*.pb.go from messages/*.proto (needs protoc).
proto:
	$(GO) generate ./messages

# Fails when the committed generated code differs from the .proto files.
proto-check:
	RAFTOR_REQUIRE_PROTOC=1 $(GO) test -run TestGeneratedCodeInSync -count=1 ./messages

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 3 $(PKGS)

# The benchmark program: Raftor and its peers side by side (docs/benchmarks.md).
bench-run:
	$(GO) run ./examples/bench

# The peers' drivers live in a nested module that CI does not build.
bench-peers:
	cd examples/bench/peers && $(GO) vet ./... && $(GO) test -count=1 ./...

# The deterministic simulator: a few hundred seeds (SEEDS=N for more).
SEEDS ?= 300
sim:
	RAFTOR_SIM_SEEDS=$(SEEDS) $(GO) test -count=1 -timeout 60m -run Sim ./cluster/sim

run:
	$(GO) run ./examples/kvstore

clean:
	rm -rf data bin

# The process-level soak: three kvstore processes killed, paused and
# restarted under load, then checked (docs/testing.md). SOAK=30m for longer.
SOAK ?= 10m
.PHONY: soak
soak:
	$(GO) run ./examples/kvstore/soak --duration $(SOAK)
