# The two commands of the README are the contract: `make run` and `make test`.
# Everything they need is installed by these targets: NuGet packages, and (through the build of consensus/Sequencer.L1)
# contracts/'s npm packages: solc-js, which compiles the inbox contract, and anvil, the local L1.

SHELL := /bin/bash
DOTNET ?= dotnet
NODE_DLL := node/bin/Release/net10.0/sequencer-node.dll

.PHONY: all build run test unit integration chaos soak bench bench-micro fuzz clean

all: build

build:
	$(DOTNET) build Cluster.sln -c Release -nologo -clp:ErrorsOnly

# Starts a local L1 (anvil on 127.0.0.1:8545, a block a second) and a 3-node cluster on 127.0.0.1 (API 7101-7103, Raft
# 7201-7203), data under .data/devnet; the inbox contract is deployed once the key is in force and the leader posts to it.
# Ctrl-C stops every node. FRESH=1 starts from empty data.
# VALIDATION=ethereum: the chain orders signed Ethereum transactions (chain id 1), one per sender and nonce; the mode
# is fixed in the log at genesis, so a data directory made in one mode needs FRESH=1 to start in the other.
VALIDATION ?= opaque
run: build
	$(DOTNET) $(NODE_DLL) devnet --data .data/devnet $(if $(FRESH),--fresh,) --validation $(VALIDATION)

# Unit, property and integration tests, then the shared API smoke test; ends with "N passed, N failed".
test:
	./scripts/test.sh

unit: build
	$(DOTNET) test --project tests/Sequencer.Tests -c Release --no-build

integration: build
	$(DOTNET) test --project tests/Sequencer.IntegrationTests -c Release --no-build

# The load generator: throughput and latency at 1/16/64/256 clients, single and bulk submits, and fdatasync latency;
# then a local 3-member etcd with the same load beside it (Debian's etcd-server, installed here when missing and
# root; skipped with a message otherwise), the ratios, and bench/results/latest.json and latest.svg; then the L1 phase.
define install-etcd-for-bench
@if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ] && [ -z "$$ETCD_BIN" ]; then \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
    echo "bench: installing Debian's etcd-server for the side-by-side phase"; \
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null 2>&1 \
      || (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null 2>&1)) \
      || echo "bench: etcd-server could not be installed; the etcd phase will be skipped"; \
  else echo "bench: no etcd binary and no root to install etcd-server; the etcd phase will be skipped"; fi; fi
endef
bench: build
	$(install-etcd-for-bench)
	$(DOTNET) bench/Sequencer.Bench/bin/Release/net10.0/sequencer-bench.dll $(BENCH_ARGS)

# BenchmarkDotNet micro-benchmarks of the core pieces ([MemoryDiagnoser]): Merkle and history roots, tx hashing, the
# header commitment, log entry encoding and decoding, batch apply, ethereum validation. MICRO_FILTER narrows them.
MICRO_FILTER ?= *
bench-micro: build
	$(DOTNET) bench/Sequencer.MicroBench/bin/Release/net10.0/Sequencer.MicroBench.dll --filter '$(MICRO_FILTER)' --job short --inProcess --artifacts .data/bench-micro $(MICRO_ARGS)

# The decoder fuzzer (issue 9): every decoder of outside bytes (log entries and what the leader's intake and apply do
# with them, shares messages, snapshot records, submit bodies) on FUZZ_CASES seeded mutations each (4 decoders, so
# 1,000,000 cases by default); prints the counts. make test runs 20,000 each.
FUZZ_CASES ?= 250000
fuzz: build
	SEQUENCER_FUZZ_CASES=$(FUZZ_CASES) $(DOTNET) tests/Sequencer.Tests/bin/Release/net10.0/Sequencer.Tests.dll \
	  -class Sequencer.Tests.DecoderFuzzTests -diagnostics

# A chaos run: real nodes, a workload, seeded faults, the invariants, a report (JSON, SVG timeline, summary).
#   make chaos                       60 s, 3 nodes, random seed, every fault kind the mode supports
#   make chaos SEED=42 DURATION=300 NODES=5 MODE=host SCENARIO=partition
# MODE=host needs root (network namespaces and iptables; iptables is installed here when missing).
SEED ?=
DURATION ?= 60
NODES ?= 3
MODE ?= proxy
SCENARIO ?= mixed
define install-iptables-for-host-mode
@if [ "$(MODE)" = host ] && [ "$$(id -u)" = 0 ] && ! command -v iptables >/dev/null 2>&1; then \
  apt-get update -qq && apt-get install -y -qq --no-install-recommends iptables; fi
endef
chaos: build
	$(install-iptables-for-host-mode)
	$(DOTNET) chaos/bin/Release/net10.0/sequencer-chaos.dll --duration $(DURATION) --nodes $(NODES) \
	  --mode $(MODE) --scenario $(SCENARIO) $(if $(SEED),--seed $(SEED),) $(CHAOS_ARGS)

# Many chaos runs in a row, one at a time, each with a fresh seed (same DURATION, NODES, MODE, SCENARIO, CHAOS_ARGS
# as above). Ends with "soak: P of N passed; failing seeds: ..." and exits non-zero when a run failed; each failing
# run keeps its directory under .data/chaos/ (replay it with make chaos SEED=...).
#   make soak RUNS=50 SCENARIO=signing        50 random seeds
#   make soak RUNS=20 FIRST_SEED=1000         seeds 1000 to 1019
#   make soak SEEDS="123 456"                 exactly these seeds
# SOAK_ARGS=--verbose shows every run's console output (it is kept in .data/soak/<time>/ either way).
RUNS ?= 10
FIRST_SEED ?=
SEEDS ?=
soak: build
	$(install-iptables-for-host-mode)
	./scripts/soak.sh --runs $(RUNS) --duration $(DURATION) --nodes $(NODES) --mode $(MODE) --scenario $(SCENARIO) \
	  $(if $(FIRST_SEED),--first-seed $(FIRST_SEED),) $(if $(SEEDS),--seeds "$(SEEDS)",) $(SOAK_ARGS) -- $(CHAOS_ARGS)

clean:
	$(DOTNET) clean Cluster.sln -c Release -nologo >/dev/null
	rm -rf .data
