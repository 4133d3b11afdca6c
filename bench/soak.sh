#!/usr/bin/env bash
# Soak test: runs a lathe-server with local workers, keeps a stream of small
# jobs flowing, and kills random parts (a training child, a worker agent, or
# the server itself) with SIGKILL at random moments, for as long as told.
# At the end it waits for every job and prints a summary: jobs submitted,
# finished, lost (must be zero), attempts, and time lost to failures.
#
# usage: bench/soak.sh [--minutes M] [--workers N] [--seed S]
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${LATHE_BIN:-$ROOT/build/bin}"
MINUTES=10
WORKERS=2
SEED=$RANDOM
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    *) echo "usage: $0 [--minutes M] [--workers N] [--seed S]" >&2; exit 2 ;;
  esac
done
RANDOM=$SEED
for b in lathe lathe-server lathe-worker lathe-train; do
  [ -x "$BIN/$b" ] || { echo "soak: $BIN/$b is missing; run ./run build" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/lathe-soak.XXXXXX)"
DATA="$WORK/server"
PORT=$((20000 + RANDOM % 20000))
ADDR="127.0.0.1:$PORT"
export LATHE_SERVER="$ADDR"
SERVER_PID=""

start_server() {
  "$BIN/lathe-server" --listen "$ADDR" --metrics-listen 127.0.0.1:0 \
    --data-dir "$DATA" --local-workers "$WORKERS" --heartbeat-timeout-ms 3000 \
    >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    # The first start writes the admin's token into the data directory.
    [ -f "$DATA/admin.token" ] && export LATHE_TOKEN="$(cat "$DATA/admin.token")"
    "$BIN/lathe" list >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "soak: the server did not come up; see $WORK/server.log" >&2
  exit 1
}
stop_server() {
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}
trap stop_server EXIT

# A random process whose command line matches the pattern (empty if none).
pick() {
  local pids
  mapfile -t pids < <(pgrep -f "$1" || true)
  [ ${#pids[@]} -gt 0 ] && echo "${pids[RANDOM % ${#pids[@]}]}"
  return 0
}

# A small, learnable dataset.
for i in $(seq 1 64); do
  if [ $((i % 2)) -eq 0 ]; then
    echo "{\"text\":\"a great and wonderful day number $i\",\"label\":\"pos\"}"
  else
    echo "{\"text\":\"an awful and terrible day number $i\",\"label\":\"neg\"}"
  fi
done >"$WORK/data.jsonl"

start_server
echo "soak: seed $SEED, $MINUTES min, $WORKERS workers, data in $WORK"
submitted=0
kills_child=0
kills_agent=0
kills_server=0
end=$(( $(date +%s) + MINUTES * 60 ))
: >"$WORK/jobs.txt"
while [ "$(date +%s)" -lt "$end" ]; do
  # Keep about twice as many jobs queued or running as there are workers.
  active=$("$BIN/lathe" list --state QUEUED --state RUNNING --page-size 1000 2>/dev/null | tail -n +2 | wc -l || echo 0)
  while [ "$active" -lt $((WORKERS * 2)) ]; do
    if out=$("$BIN/lathe" submit --task text-classification --model preset:bert-tiny \
        --train-data "$WORK/data.jsonl" --param epochs=2 --param batch_size=8 \
        --param max_seq_length=16 --param save_steps=4 --param eval_steps=0 \
        --param num_threads=1 --max-attempts 10 2>/dev/null); then
      echo "${out##* }" >>"$WORK/jobs.txt"
      submitted=$((submitted + 1))
    fi
    active=$((active + 1))
  done
  sleep $((1 + RANDOM % 4))
  case $((RANDOM % 6)) in
    0|1|2)
      pid=$(pick "$DATA/workers/.*/jobs/.*spec.json")
      [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null && kills_child=$((kills_child + 1)) ;;
    3|4)
      pid=$(pick "lathe-worker --server $ADDR")
      [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null && kills_agent=$((kills_agent + 1)) ;;
    5)
      kill -KILL "$SERVER_PID" 2>/dev/null && kills_server=$((kills_server + 1))
      wait "$SERVER_PID" 2>/dev/null || true
      start_server ;;
  esac
done

echo "soak: load stopped; waiting for every job to end"
finished=0; failed=0; lost=0; attempts=0
for id in $(cat "$WORK/jobs.txt"); do
  if ! out=$("$BIN/lathe" wait "$id" --timeout 900 --output json 2>/dev/null); then
    state=$(printf '%s' "$out" | sed -n 's/.*"state":"\([A-Z]*\)".*/\1/p')
    [ -z "$state" ] && { lost=$((lost + 1)); continue; }
  fi
  state=$(printf '%s' "$out" | sed -n 's/.*"state":"\([A-Z]*\)".*/\1/p')
  a=$(printf '%s' "$out" | sed -n 's/.*"attempt":\([0-9]*\).*/\1/p')
  attempts=$((attempts + ${a:-0}))
  case "$state" in
    SUCCEEDED) finished=$((finished + 1)) ;;
    "") lost=$((lost + 1)) ;;
    *) failed=$((failed + 1)) ;;
  esac
done
# Time lost: attempts that did not finish, by their recorded durations.
lost_s=$(sqlite3 "$DATA/lathe.db" \
  "SELECT COALESCE(SUM(end_ms - start_ms), 0) / 1000.0 FROM attempts WHERE outcome IS NOT 'SUCCEEDED' AND end_ms IS NOT NULL" 2>/dev/null || echo "n/a")
cat <<EOF
soak summary (seed $SEED, $MINUTES min, $WORKERS workers)
  jobs submitted (acknowledged): $submitted
  finished (SUCCEEDED):          $finished
  failed:                        $failed
  lost:                          $lost
  attempts in total:             $attempts
  kills: child $kills_child, agent $kills_agent, server $kills_server
  time in attempts that did not finish: ${lost_s} s
EOF
[ "$lost" -eq 0 ]
