#!/usr/bin/env bash
# make test: builds, runs every test suite and the API conformance smoke test against a fresh local cluster,
# and ends with one plain line "N passed, N failed" (the .NET runners' own summaries are not the totals).
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
failing=() # names of failed tests, repeated at the end so that a log's tail names them
details=$(mktemp) # the first lines of each failed test's message, repeated at the end too (CI shows only the tail)
trap 'rm -f "$details"' EXIT
count() { # $1 = suite name, $2 = passed, $3 = failed
  passed=$((passed + $2)); failed=$((failed + $3))
  echo "== $1: $2 passed, $3 failed"
}

# Host-mode chaos tests need iptables (network namespaces come with iproute2); install it when we can.
if [ "$(id -u)" = 0 ] && ! command -v iptables >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends iptables) >/dev/null 2>&1 || echo "note: could not install iptables; host-mode chaos tests will be skipped"
fi

# The status page's browser test drives Debian's chromium through chromium-driver; install them when we can (the test
# is skipped with the reason where they cannot be had).
if [ "$(id -u)" = 0 ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver for the status page's browser test"
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1) \
    || echo "note: could not install chromium; the status page's browser test will be skipped"
fi

# The TestFaults node (deliberate safety bugs) proves that the chaos checker can fail.
if ! dotnet build Cluster.sln -c Release -nologo -clp:ErrorsOnly || ! dotnet build node -c TestFaults -nologo -clp:ErrorsOnly; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

# Each suite has a time limit, so that a hung test fails the run instead of stalling CI.
for entry in tests/Sequencer.Tests:600 tests/Sequencer.IntegrationTests:1200 tests/Sequencer.ChaosTests:1800; do
  project=${entry%%:*}; limit=${entry##*:}
  log=$(mktemp)
  timeout --kill-after=30 "$limit" dotnet test --project "$project" -c Release --no-build 2>&1 | tee "$log"
  ok=$(grep -oP '^\s*succeeded: \K[0-9]+' "$log" | tail -n 1)
  bad=$(grep -oP '^\s*failed: \K[0-9]+' "$log" | tail -n 1)
  skipped=$(grep -oP '^\s*skipped: \K[0-9]+' "$log" | tail -n 1)
  [ -n "$skipped" ] && [ "$skipped" != 0 ] && echo "== $project: $skipped skipped (see above why)"
  # The runner prints "failed <test name> (<duration>)" for each failed test.
  while IFS= read -r name; do failing+=("$project: $name"); done \
    < <(grep -oP '^\s*failed \K\S.*(?= \([0-9][^)]*\)\s*$)' "$log" | head -n 20)
  # Each failure's message, without its stack trace: the lines after "failed <name> (<duration>)", up to the next
  # test's line, at most 8 each (CI shows only the tail of a run).
  awk '/^[[:space:]]*failed [^[:space:]].* \([0-9][^)]*\)[[:space:]]*$/ { n = 8; print; next }
       /^[[:space:]]*(passed|skipped) |^Test run summary|^[^[:space:]].*\.dll \(/ { n = 0 }
       /^[[:space:]]+(at |from |--- End of)/ { next }
       n > 0 { print; n-- }' "$log" | head -n 40 >> "$details"
  if [ -z "$ok" ] || [ -z "$bad" ]; then
    # The runner itself failed (crash, build problem): count the suite as one failure.
    count "$project" 0 1
  else
    count "$project" "$ok" "$bad"
  fi
  rm -f "$log"
done

# The shared API smoke test against a fresh 3-node cluster on ports of its own.
mkdir -p .data
smoke_data=.data/test-smoke
rm -rf "$smoke_data"
node_dll=node/bin/Release/net10.0/sequencer-node.dll
dotnet "$node_dll" devnet --data "$smoke_data" --api-port 17101 --raft-port 17201 --l1-port 18545 --quiet > .data/test-smoke.log 2>&1 &
devnet=$!
up=0
for _ in $(seq 1 300); do
  if grep -q "nodes are up" .data/test-smoke.log 2>/dev/null; then up=1; break; fi
  if ! kill -0 "$devnet" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ "$up" = 1 ]; then
  log=$(mktemp)
  python3 ../shared/tools/api-smoke http://127.0.0.1:17101 http://127.0.0.1:17102 http://127.0.0.1:17103 2>&1 | tee "$log"
  smoke_ok=$(grep -c '^PASS' "$log"); smoke_bad=$(grep -c '^FAIL' "$log")
  while IFS= read -r name; do failing+=("api-smoke: $name"); done < <(grep -oP '^FAIL \K.*' "$log" | head -n 20)
  if [ "$smoke_ok" = 0 ] && [ "$smoke_bad" = 0 ]; then
    # The smoke tool did not run (missing, or crashed before its first check): that is a failure, not a pass.
    count "api-smoke (did not run)" 0 1
  else
    count "api-smoke" "$smoke_ok" "$smoke_bad"
  fi
  rm -f "$log"

  # The second-language check (issue 11): a proof bundle verified by a Python script with only the standard library.
  tx=$(curl -s -X POST http://127.0.0.1:17102/v1/txs -H 'content-type: application/json' -d '{"tx":"0x7079746f6e2d636865636b"}' \
    | python3 -c 'import sys, json; print(json.load(sys.stdin)["results"][0]["hash"])' 2>/dev/null)
  key=$(curl -s http://127.0.0.1:17101/v1/keys | python3 -c 'import sys, json; print(json.load(sys.stdin)[0]["groupKey"])' 2>/dev/null)
  python_ok=0
  for _ in $(seq 1 50); do
    if [ -n "$tx" ] && [ -n "$key" ] && python3 tests/python/verify_bundle.py --node http://127.0.0.1:17103 --tx "$tx" --group-key "$key" > .data/test-python.log 2>&1 \
      && grep -q '^proven: signed' .data/test-python.log; then python_ok=1; break; fi
    sleep 0.2
  done
  cat .data/test-python.log 2>/dev/null
  if [ "$python_ok" = 1 ]; then count "python bundle check" 1 0; else failing+=("python bundle check: tests/python/verify_bundle.py"); count "python bundle check" 0 1; fi
else
  cat .data/test-smoke.log
  count "api-smoke (cluster did not start)" 0 1
fi
kill -TERM "$devnet" 2>/dev/null
wait "$devnet" 2>/dev/null

if [ -s "$details" ]; then
  echo "== the failures' messages (the first lines of each)"
  head -n 40 "$details"
fi
for name in "${failing[@]}"; do echo "FAILED $name"; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
