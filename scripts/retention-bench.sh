#!/usr/bin/env bash
# Disk use with and without retention (issue 12): a local 3-node ethereum-mode devnet (2-of-3 signing, no L1) under
# the ethereum bench's load (pre-signed EIP-1559 txs: 16 and 64 single-submit clients, then 16 bulk clients, each for
# SECONDS), once with every tx kept and once with --retain-heights RETAIN; prints each node's store files after each.
# Usage: scripts/retention-bench.sh [SECONDS] [RETAIN]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
retain=${2:-1000}
node=node/bin/Release/net10.0/sequencer-node.dll
bench=bench/Sequencer.Bench/bin/Release/net10.0/sequencer-bench.dll
[ -f "$node" ] && [ -f "$bench" ] || dotnet build Cluster.sln -c Release -nologo -clp:ErrorsOnly >/dev/null
data=$(mktemp -d /tmp/retention-bench.XXXXXX)
pid=
stop() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; pid=; }
trap 'stop; rm -rf "$data"' EXIT

for keep in 0 "$retain"; do
  dir="$data/retain-$keep"
  setsid dotnet "$node" devnet --data "$dir" --fresh --validation ethereum --retain-heights "$keep" --l1 none >"$dir.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 120); do grep -q "Ctrl-C stops" "$dir.log" 2>/dev/null && break; sleep 1; done
  grep -q "Ctrl-C stops" "$dir.log" || { echo "the devnet did not start: $dir.log"; tail -20 "$dir.log"; exit 1; }
  echo "== --retain-heights $keep: load for 3 x $seconds s"
  dotnet "$bench" --target http://127.0.0.1:7101 --validation ethereum --warmup 1 --seconds "$seconds" | tail -4
  sleep 5
  curl -s http://127.0.0.1:7101/v1/cluster | python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["pipeline"]; print("height", d["height"], "stored", p["storedHeight"], "pruned through", p["prunedHeight"], "tx index runs", p["storedTxIndexRuns"], "tx index memory", p["storedTxIndexBytes"], "bytes")'
  for n in 1 2 3; do
    d="$dir/node$n"
    store=$(du -cb "$d"/store*.db 2>/dev/null | tail -1 | cut -f1)
    index=$(du -sb "$d/txindex" | cut -f1)
    hist=$(du -b "$d/history.bin" | cut -f1)
    echo "node$n: store files $((store / 1024)) KiB, tx index $((index / 1024)) KiB, history $((hist / 1024)) KiB"
  done
  stop
done
