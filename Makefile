# Merch store. `make run` serves on 127.0.0.1:8080; `make test` runs every test.
# Nothing here needs Docker: PostgreSQL 15 comes from the system binaries
# (/usr/lib/postgresql/15/bin), started by scripts/pg.sh or by the tests.

SHELL := /bin/bash
GO ?= go
GOLANGCI_LINT_VERSION := v2.15.0
BIN := $(CURDIR)/bin
# VERSION names the build in `merch-store -version` and merch_build_info.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
FUZZTIME ?= 30s
DURATION ?= 30s
CONNS ?= 64
export JWT_SECRET ?= dev-secret-not-for-production
# The Go files lint and fmt format: the tracked ones, or without a git
# checkout (git archive, a tarball) every one outside dot directories and
# bin/. gofmt given no file would read stdin and wait.
GO_FILES = $(shell git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.*' -not -path './bin/*')

.PHONY: help build run test test-cluster test-dbha lint fmt bench bench-http bench-cluster load locust profile soak fuzz pg-up pg-down clean

# Packages with tests (Test functions, not only benchmarks), the fault tests
# apart (they run alone, after the race suite); and those with allocation
# budgets. Passes skip packages with nothing to run: building a package's
# test binary and its TestMain (PostgreSQL) for zero tests costs seconds.
TEST_PKGS = $(shell grep -rlE '^func Test[A-Za-z0-9_]*\(t \*testing\.T\)' --include='*_test.go' . | xargs -n1 dirname | sort -u | grep -vE '^./bench/(faults|cluster|dbha)$$')
ALLOC_PKGS = $(shell grep -rlE '^func Test[A-Za-z0-9_]*Alloc' --include='*_test.go' . | xargs -n1 dirname | sort -u)

## help: list the targets.
help:
	@awk '/^## [a-z-]+:/ { sub(/^## /, ""); n = index($$0, ":"); printf "%-12s %s\n", substr($$0, 1, n - 1), substr($$0, n + 2) }' $(MAKEFILE_LIST)

## build: bin/merch-store and bin/loadgen.
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/merch-store ./cmd/merch-store
	$(GO) build -o $(BIN)/loadgen ./cmd/loadgen

## run: serve on 127.0.0.1:8080 (HTTP_ADDR overrides); starts the project-local PostgreSQL when DATABASE_URL is unset.
run: build
	@if [ -z "$$DATABASE_URL" ]; then scripts/pg.sh up; fi
	HTTP_ADDR="$${HTTP_ADDR:-127.0.0.1:8080}" DATABASE_URL="$${DATABASE_URL:-$$(scripts/pg.sh url)}" $(BIN)/merch-store

## test: vet; the race-enabled suite with coverage; the allocation budgets (they need -race off);
## then the quick fault tests on their own (they measure latency, so nothing else may compete for the cores).
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m -coverprofile=coverage.out $(TEST_PKGS)
	@$(GO) tool cover -func=coverage.out | tail -1
	$(GO) test -count=1 -timeout 10m -run 'Alloc' $(ALLOC_PKGS)
	$(GO) test -count=1 -timeout 20m -v -run 'Fault' ./bench/faults 2>&1 | grep -E '^(--- |ok|FAIL|panic|\s+\w+_test\.go)'; exit $${PIPESTATUS[0]}
	$(GO) test -count=1 -timeout 10m -v -run 'TestClusterSmoke|TestClusterHAProxyHash' ./bench/cluster 2>&1 | grep -E '^(--- |ok|FAIL|panic|\s+\w+_test\.go)'; exit $${PIPESTATUS[0]}

## test-cluster: three node binaries behind HAProxy, relays on every link, CLUSTER_CYCLES (10) seeded cycles of every fault.
test-cluster:
	CLUSTER_CYCLES=$${CLUSTER_CYCLES:-10} $(GO) test -count=1 -timeout 20m -v -run 'TestCluster' ./bench/cluster 2>&1 | grep -E '^(--- |ok|FAIL|panic|\s+\w+_test\.go)'; exit $${PIPESTATUS[0]}

## test-dbha: the service on a pg_auto_failover formation (monitor, primary, synchronous standby) through six faults under load; skips without pg_auto_failover.
test-dbha:
	$(GO) test -count=1 -timeout 8m -v -run 'TestDBHA$$' ./bench/dbha 2>&1 | grep -E '^(--- |ok|FAIL|panic|\s+\w+_test\.go)'; exit $${PIPESTATUS[0]}

## lint: gofmt, go vet and golangci-lint at a pinned version.
lint: $(BIN)/golangci-lint
	@out="$$(gofmt -l $(GO_FILES) </dev/null)"; if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/golangci-lint run ./...

$(BIN)/golangci-lint:
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

## fmt: gofmt every tracked Go file.
fmt:
	gofmt -w $(GO_FILES) </dev/null

## bench: go test benchmarks with allocations (journal against a real PostgreSQL).
bench:
	$(GO) test -run=NONE -bench=. -benchmem -count=1 ./actors ./api ./persist ./bench/...

## bench-http: the service vs a static fasthttp handler, in one run, with ratios.
bench-http:
	DURATION=$${DURATION:-10s} CONNS=$(CONNS) scripts/with-server.sh scripts/bench-http.sh

## bench-cluster: one node vs three nodes behind HAProxy vs three nodes loaded on one (forwards), same run.
bench-cluster:
	DURATION=$${DURATION:-10s} CONNS=$(CONNS) scripts/bench-cluster.sh

## load: start PostgreSQL + the service, run the load generator for DURATION, print the report.
## With -stages in LOADGEN_ARGS the stages replace -c and -d.
load:
	scripts/with-server.sh bash -c 'bin/loadgen -addr $$SERVER_ADDR $(if $(findstring -stages,$(LOADGEN_ARGS)),,-c $(CONNS) -d $(DURATION)) $(LOADGEN_ARGS)'

## locust: the same scenario with Locust (Debian python3-locust), headless and bounded.
locust:
	DURATION=$(DURATION) scripts/with-server.sh scripts/locust.sh

## profile: CPU profile of the service under the mixed load; writes bin/cpu.prof and prints the top.
profile:
	DURATION=$${DURATION:-10s} CONNS=$(CONNS) scripts/with-server.sh scripts/profile.sh

## soak: the long fault tests (kill -9 cycles, outages, storms).
soak:
	SOAK=1 $(GO) test -count=1 -timeout 80m -run 'Fault|Soak' -v ./bench/...

## fuzz: each fuzz target for FUZZTIME.
fuzz:
	@for pkg in ./api ./actors; do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run=NONE -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	  done; done

## pg-up: start the project-local PostgreSQL (.data/, 127.0.0.1:54329) and print its URL.
pg-up:
	scripts/pg.sh up
	@scripts/pg.sh url

## pg-down: stop it.
pg-down:
	scripts/pg.sh down

## clean: stop it and remove its data wherever scripts/pg.sh put it (a /tmp fallback too), bin/, .data/ and coverage.
clean:
	scripts/pg.sh clean
	rm -rf $(BIN) .data coverage.out
