#!/bin/bash
# Replaced-disk drill against a running `make run` cluster: bulk load through the leader; after KILLAT seconds kill
# follower N, move its data directory away (as a replaced disk would leave it) and start it again on an empty one;
# print every member's height and signed height every 5 s. The bench line at the end marks the run FAILED if any
# member's Raft term moved (an election under load). KEEP_DISK=1 restarts the node on its own data directory after DOWN
# seconds instead (a crash and restart: its first snapshot should be a delta from its tip).
#   N=1 LEADER=7103 SECS=240 KILLAT=120 scripts/replaced-disk.sh
#   KEEP_DISK=1 DOWN=30 N=3 LEADER=7102 SECS=90 KILLAT=20 scripts/replaced-disk.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:?which follower to replace, e.g. N=1}; LEADER=${LEADER:?the leader API port, e.g. LEADER=7103}
SECS=${SECS:-150}; KILLAT=${KILLAT:-45}; DATA=${DATA:-.data/devnet}; KEEP_DISK=${KEEP_DISK:-}; DOWN=${DOWN:-0}
pid=$(pgrep -f "sequencer-node.dll run --id $N ")
mapfile -t args < <(tr '\0' '\n' < "/proc/$pid/cmdline")
log=$(mktemp)
dotnet bench/Sequencer.Bench/bin/Release/net10.0/sequencer-bench.dll --target "http://127.0.0.1:$LEADER" --mode bulk \
  --clients 16 --etcd off --l1 off --half-clients 0 --warmup 0 --cluster-warmup 0 --paced --seconds "$SECS" > "$log" 2>&1 &
bench=$!
h() { curl -s -m 1 "localhost:$1/v1/cluster" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['height'], d['signedThrough'], 'term', d['term'])" 2>/dev/null || echo down; }
start=$(date +%s); restarted=""
while kill -0 $bench 2>/dev/null; do
  t=$(( $(date +%s) - start ))
  if [ "$t" -ge "$KILLAT" ] && [ -n "$pid" ]; then
    kill -9 "$pid"; pid=""
    if [ -n "$KEEP_DISK" ]; then
      echo "t=$t killed node $N; it restarts on its own data directory in $DOWN s"; restart_at=$(( t + DOWN ))
    else
      sleep 0.5; rm -rf "$DATA/node$N.replaced"; mv "$DATA/node$N" "$DATA/node$N.replaced"
      echo "t=$t killed node $N, its data directory is now $DATA/node$N.replaced"; restart_at=$t
    fi
  fi
  if [ -n "${restart_at:-}" ] && [ -z "$restarted" ] && [ "$t" -ge "$restart_at" ]; then
    (setsid nohup "${args[@]}" >> "$DATA/node$N.log" 2>&1 &); restarted=1
    echo "t=$t started node $N on $([ -n "$KEEP_DISK" ] && echo its own || echo an empty) data directory"
  fi
  echo "t=$t leader: $(h "$LEADER") | node $N: $(h "710$N")"
  sleep 5
done
wait $bench || true
grep -E "^(mode|bulk)|FAILED" "$log"; rm -f "$log"
echo "leader's snapshot transfers: $(curl -s -m 2 "localhost:$LEADER/v1/cluster" | python3 -c "import json,sys; print(json.dumps(json.load(sys.stdin).get('snapshots')))" 2>/dev/null || echo unknown)"
