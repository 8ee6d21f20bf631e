#!/bin/bash
# Runs the bulk benchmark (64 clients, signing on) against a fresh local cluster and samples every node's RSS
# (VmRSS, RssAnon, RssFile) and WAL size every 10 s: the measurement of docs/design.md, "Memory under load".
#   scripts/memory-bench.sh [SECONDS] [OUT] [BENCH ARGS...]    (defaults: 180 s, .data/memory-bench)
# Extra arguments go to the bench, e.g. --node-arg=--limit --node-arg=maxRecentTxs=524288.
# Needs a Release build (make build). Prints "t_s node rss_mb anon_mb file_mb wal_mb wal_files" lines to OUT/rss.txt.
set -uo pipefail
seconds=${1:-180}
out=$(realpath -m "${2:-.data/memory-bench}")
root=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$out"
mkdir -p "$out"
dotnet "$root/bench/Sequencer.Bench/bin/Release/net10.0/sequencer-bench.dll" --mode bulk --clients 64 --seconds "$seconds" \
    --warmup 5 --paced --signing-only --etcd off --l1 off --half-clients 0 --data "$out/data" --results "$out/results" "${@:3}" > "$out/bench.txt" 2>&1 &
bench=$!
start=$(date +%s)
echo "t_s node rss_mb anon_mb file_mb wal_mb wal_files" > "$out/rss.txt"
while kill -0 "$bench" 2>/dev/null; do
    sleep 10
    t=$(($(date +%s) - start))
    for pid in $(pgrep -f "sequencer-node.dll run .*--data $out/data/" || true); do
        cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || continue
        node=$(grep -o -- '--id [0-9]*' <<< "$cmd" | awk '{print $2}' || true)
        dir=$(grep -o -- '--data [^ ]*' <<< "$cmd" | awk '{print $2}' || true)
        read -r rss anon file < <(awk '/VmRSS/{r=int($2/1024)} /RssAnon/{a=int($2/1024)} /RssFile/{f=int($2/1024)} END{print r, a, f}' "/proc/$pid/status" 2>/dev/null) || continue
        wal=$(du -sm "$dir/wal" 2>/dev/null | awk '{print $1}')
        files=$(find "$dir/wal" -type f 2>/dev/null | wc -l)
        echo "$t $node $rss $anon $file $wal $files" >> "$out/rss.txt"
    done
done
wait "$bench" || true
grep -E "^bulk|FAILED" "$out/bench.txt" || tail -5 "$out/bench.txt"
cat "$out/rss.txt"
