# The two commands of the README are the contract: `make run` and `make test`.
# Everything they need is installed by these targets (NuGet restore; later npm for the local L1).

SHELL := /bin/bash
DOTNET ?= dotnet
NODE_DLL := node/bin/Release/net10.0/sequencer-node.dll

.PHONY: all build run test unit integration chaos bench clean

all: build

build:
	$(DOTNET) build Cluster.sln -c Release -nologo -clp:ErrorsOnly

# Starts a local 3-node cluster on 127.0.0.1 (API 7101-7103, Raft 7201-7203), data under .data/devnet.
# Ctrl-C stops every node. FRESH=1 starts from empty data.
run: build
	$(DOTNET) $(NODE_DLL) devnet --data .data/devnet $(if $(FRESH),--fresh,)

# Unit, property and integration tests, then the shared API smoke test; ends with "N passed, N failed".
test:
	./scripts/test.sh

unit: build
	$(DOTNET) test --project tests/Sequencer.Tests -c Release --no-build

integration: build
	$(DOTNET) test --project tests/Sequencer.IntegrationTests -c Release --no-build

# The load generator: throughput and latency at 1/16/64/256 clients, single and bulk submits, and fdatasync latency.
bench: build
	$(DOTNET) bench/Sequencer.Bench/bin/Release/net10.0/sequencer-bench.dll $(BENCH_ARGS)

# A chaos run: real nodes, a workload, seeded faults, the invariants, a report (JSON, SVG timeline, summary).
#   make chaos                       60 s, 3 nodes, random seed, every fault kind the mode supports
#   make chaos SEED=42 DURATION=300 NODES=5 MODE=host SCENARIO=partition
# MODE=host needs root (network namespaces and iptables; iptables is installed here when missing).
SEED ?=
DURATION ?= 60
NODES ?= 3
MODE ?= proxy
SCENARIO ?= mixed
chaos: build
	@if [ "$(MODE)" = host ] && [ "$$(id -u)" = 0 ] && ! command -v iptables >/dev/null 2>&1; then \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends iptables; fi
	$(DOTNET) chaos/bin/Release/net10.0/sequencer-chaos.dll --duration $(DURATION) --nodes $(NODES) \
	  --mode $(MODE) --scenario $(SCENARIO) $(if $(SEED),--seed $(SEED),) $(CHAOS_ARGS)

clean:
	$(DOTNET) clean Cluster.sln -c Release -nologo >/dev/null
	rm -rf .data
