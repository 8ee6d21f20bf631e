#!/usr/bin/env bash
# make soak: many chaos runs in a row, one at a time, each with a fresh seed. Ends with one line
# "soak: P of N passed; failing seeds: ..." and exits non-zero when any run failed. A failing run's directory under
# .data/chaos/ keeps its report, history, node data and logs (the harness does that); replay it with
# `make chaos SEED=<seed>` and the same SCENARIO, NODES, MODE and DURATION.
#
#   scripts/soak.sh [--runs N] [--first-seed S | --seeds "S1 S2 ..."] [--duration SECONDS] [--nodes 3|5]
#                   [--mode proxy|host] [--scenario NAME] [--verbose] [-- EXTRA CHAOS ARGUMENTS]
#
# Seeds: --seeds runs exactly those (and --runs is ignored); --first-seed S runs S, S+1, ..., S+N-1; otherwise every
# run gets a random seed. Each run's console output is kept in .data/soak/<time>/run<I>-seed<S>.log (--verbose also shows it).
set -uo pipefail
cd "$(dirname "$0")/.."

runs=10 first_seed="" seeds="" duration=60 nodes=3 mode=proxy scenario=mixed verbose=0
extra=()
usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --first-seed) first_seed=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --scenario) scenario=$2; shift 2 ;;
    --verbose) verbose=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "soak: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

is_int() { [[ $1 =~ ^-?[0-9]+$ ]]; }
if [ -n "$seeds" ] && [ -n "$first_seed" ]; then echo "soak: give --seeds or --first-seed, not both" >&2; exit 2; fi
if [ -n "$seeds" ]; then
  read -r -a plan <<< "$seeds"
  for seed in "${plan[@]}"; do is_int "$seed" || { echo "soak: seed '$seed' is not an integer" >&2; exit 2; }; done
else
  [[ $runs =~ ^[0-9]+$ ]] && [ "$runs" -gt 0 ] || { echo "soak: --runs must be a positive integer, not '$runs'" >&2; exit 2; }
  plan=()
  if [ -n "$first_seed" ]; then
    is_int "$first_seed" || { echo "soak: --first-seed '$first_seed' is not an integer" >&2; exit 2; }
    for ((i = 0; i < runs; i++)); do plan+=($((first_seed + i))); done
  else
    # Fresh random seeds (31 bits, as the harness draws them), printed so that every run can be replayed.
    for ((i = 0; i < runs; i++)); do plan+=($(( $(od -An -N4 -tu4 /dev/urandom) & 0x7fffffff ))); done
  fi
fi

dll=chaos/bin/Release/net10.0/sequencer-chaos.dll
[ -f "$dll" ] || { echo "soak: $dll is missing; build first (make build)" >&2; exit 2; }
[[ $duration =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "soak: --duration must be a number of seconds, not '$duration'" >&2; exit 2; }
# A hung run must not stall the soak: the harness's own waits add at most about 2 minutes past the duration.
limit=$(( ${duration%.*} + 300 ))

logs=.data/soak/$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$logs"
interrupted=0 refused=0
trap 'interrupted=1' INT TERM

total=${#plan[@]} done_runs=0 passed=0
failing=() failing_dirs=()
echo "soak: $total runs of scenario=$scenario nodes=$nodes mode=$mode duration=${duration}s; seeds: ${plan[*]}"
echo "soak: console output of each run in $logs/"
for seed in "${plan[@]}"; do
  run=$((done_runs + 1))
  log=$logs/run$run-seed$seed.log
  started=$SECONDS
  command=(timeout --foreground --kill-after=60 "$limit" dotnet "$dll" --seed "$seed" --duration "$duration" --nodes "$nodes"
    --mode "$mode" --scenario "$scenario" "${extra[@]}")
  if [ "$verbose" = 1 ]; then
    "${command[@]}" 2>&1 | tee "$log"
    code=${PIPESTATUS[0]}
  else
    "${command[@]}" > "$log" 2>&1
    code=$?
  fi
  elapsed=$((SECONDS - started))
  if [ "$interrupted" = 1 ]; then
    echo "soak: run $run/$total seed $seed: interrupted"
    break
  fi
  done_runs=$run
  # The harness's summary names the run's directory: "report: <dir>/report.json".
  dir=$(grep -oP '^report: \K.*(?=/report\.json$)' "$log" | tail -n 1)
  case "$code" in
    0)
      passed=$((passed + 1))
      echo "soak: run $run/$total seed $seed: PASS in ${elapsed} s"
      ;;
    2)
      # A usage error fails every run the same way: stop here.
      echo "soak: run $run/$total seed $seed: the harness refused the arguments (exit 2):"
      sed 's/^/    /' "$log"
      refused=1
      break
      ;;
    *)
      why="exit $code"
      [ "$code" = 124 ] && why="timed out after ${limit} s"
      [ "$code" = 137 ] && why="killed after the time limit"
      failing+=("$seed")
      failing_dirs+=("${dir:-$log}")
      echo "soak: run $run/$total seed $seed: FAIL ($why) in ${elapsed} s: ${dir:-no report, see $log}"
      grep -E '^  FAIL ' "$log" | sed 's/^/    /'
      ;;
  esac
done

summary="soak: $passed of $done_runs passed"
if [ "${#failing[@]}" -gt 0 ]; then summary+="; failing seeds: ${failing[*]}"; fi
[ "$interrupted" = 1 ] && summary+=" (interrupted after $done_runs of $total runs)"
if [ "${#failing_dirs[@]}" -gt 0 ]; then
  echo "soak: failing runs kept in:"
  printf '    %s\n' "${failing_dirs[@]}"
  echo "soak: replay one with: make chaos SEED=${failing[0]} SCENARIO=$scenario NODES=$nodes MODE=$mode DURATION=$duration${extra[*]:+ CHAOS_ARGS=\"${extra[*]}\"}"
fi
echo "$summary" | tee "$logs/summary.txt"
[ "$interrupted" = 1 ] && exit 130
[ "$refused" = 1 ] && exit 2
[ "${#failing[@]}" = 0 ] && [ "$done_runs" -gt 0 ]
