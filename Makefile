# The two commands of the README are the contract: `make run` and `make test`.
# Everything they need is installed by these targets (NuGet restore; later npm for the local L1).

SHELL := /bin/bash
DOTNET ?= dotnet
NODE_DLL := node/Sequencer.Node/bin/Release/net10.0/sequencer-node.dll

.PHONY: all build run test unit integration smoke bench clean

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

clean:
	$(DOTNET) clean Cluster.sln -c Release -nologo >/dev/null
	rm -rf .data
