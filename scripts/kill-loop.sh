#!/bin/bash
# Kills and restarts against a running `make run` cluster under bulk load: the load goes through one follower (TARGET,
# 7101 to 7103; by default a follower at the start), which forwards to the leader, and every PERIOD seconds one of the
# other two nodes is killed with SIGKILL (the leader when the target does not lead, else the other one) and restarted on
# its own data directory DOWN seconds later. A kill waits until every node is up and within 200 batches of the others
# (one failure at a time: with one member still catching up, killing another leaves no caught-up majority, and the
# leader rightly steps down). Prints every
# member's height, signed height and term every 5 s, then each node's view, the L1's and the warnings in the logs.
#   PERIOD=40 DOWN=10 SECS=300 CLIENTS=16 scripts/kill-loop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PERIOD=${PERIOD:-40}; DOWN=${DOWN:-10}; SECS=${SECS:-300}; CLIENTS=${CLIENTS:-16}; DATA=${DATA:-.data/devnet}
declare -A cmd
for n in 1 2 3; do
  pid=$(pgrep -f "sequencer-node.dll run --id $n ") || { echo "node $n is not running: start the cluster with make run first"; exit 2; }
  cmd[$n]=$(tr '\0' '\n' < "/proc/$pid/cmdline" | base64 -w0)
done
follower_api() { for n in 1 2 3; do curl -s -m 1 "localhost:710$n/v1/cluster" | grep -q '"role":"follower"' && { echo "710$n"; return; }; done; echo 7101; }
TARGET=${TARGET:-$(follower_api)}; victims=(); for n in 1 2 3; do [ "710$n" != "$TARGET" ] && victims+=("$n"); done
echo "load through $TARGET; kills node ${victims[0]} or node ${victims[1]}, the leader when it is one of them"
log=$(mktemp)
dotnet bench/Sequencer.Bench/bin/Release/net10.0/sequencer-bench.dll --target "http://127.0.0.1:$TARGET" --mode bulk \
  --clients "$CLIENTS" --etcd off --l1 off --half-clients 0 --warmup 0 --cluster-warmup 0 --paced --seconds "$SECS" > "$log" 2>&1 &
bench=$!
h() { curl -s -m 1 "localhost:$1/v1/cluster" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['height'], d['signedThrough'], 't'+str(d['term']), d['role'][0])" 2>/dev/null || echo down; }
caught_up() {
  local hs; hs=$(for n in 1 2 3; do h "710$n" | awk '{print $1}'; done)
  ! grep -q down <<< "$hs" && [ $(( $(sort -n <<< "$hs" | tail -1) - $(sort -n <<< "$hs" | head -1) )) -le 200 ]
}
start=$(date +%s); next=1; declare -A back=()
while kill -0 $bench 2>/dev/null; do
  t=$(( $(date +%s) - start ))
  for n in "${!back[@]}"; do
    if [ "$t" -ge "${back[$n]}" ]; then
      mapfile -t args < <(base64 -d <<< "${cmd[$n]}")
      (setsid nohup "${args[@]}" >> "$DATA/node$n.log" 2>&1 &); unset "back[$n]"; echo "t=$t restarted node $n"
    fi
  done
  if [ "$t" -ge $(( PERIOD * next )) ] && [ "$t" -lt $(( SECS - DOWN - 15 )) ] && [ ${#back[@]} -eq 0 ] && caught_up; then
    victim=${victims[$(( (next - 1) % 2 ))]}
    for v in "${victims[@]}"; do h "710$v" | grep -q ' l$' && victim=$v; done
    pid=$(pgrep -f "sequencer-node.dll run --id $victim " || true)
    role=$(h "710$victim" | awk '{print $NF}'); [ -n "$pid" ] && kill -9 "$pid" && echo "t=$t killed node $victim (role $role)"
    back[$victim]=$(( t + DOWN )); next=$(( next + 1 ))
  fi
  echo "t=$t  1: $(h 7101) | 2: $(h 7102) | 3: $(h 7103)"
  sleep 5
done
wait $bench || true
for n in "${!back[@]}"; do
  mapfile -t args < <(base64 -d <<< "${cmd[$n]}"); (setsid nohup "${args[@]}" >> "$DATA/node$n.log" 2>&1 &); echo "restarted node $n"
done
echo "(a leader kill changes the term: the bench's FAILED mark below is expected when one was killed)"
grep -E "^(mode|bulk)" "$log"; grep -iE "error|fail" "$log" | head -5; rm -f "$log"
sleep 5
for n in 1 2 3; do echo "node $n: $(h "710$n")"; done
curl -s -m 2 "localhost:$TARGET/v1/l1" | python3 -c "import json,sys; d=json.load(sys.stdin); print('l1: posted', d.get('postedHeight'), 'finalized', d.get('finalizedHeight'), 'reorgs', d.get('reorgs'))" 2>/dev/null || true
echo "warnings and errors in the node logs since the start (by message, first 12):"
grep -hE " (warn|fail|crit): " "$DATA"/node?.log | awk -v s="$(date -d "@$start" +%H:%M:%S)" '$1 >= s' | sed -E 's/^[0-9:.]+ //; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -12
