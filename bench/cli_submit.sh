#!/usr/bin/env bash
# `aam submit` of one big batch file through the real CLI, process start
# included: a manager with no workers (the jobs stay queued) started from
# the release binaries, a JSON file of N (default 1,000,000) `/bin/true`
# jobs, and the time from `aam submit FILE` to its answer (the session is
# durable then), and the CLI's peak resident memory. Pass several binary
# directories to compare builds in one run; each is timed in turn, twice.
#
#   cargo build --release
#   bench/cli_submit.sh                       # target/release
#   bench/cli_submit.sh /tmp/old /tmp/new     # two builds, alternating
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-1000000}
dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=("$root/target/release")
work=$(mktemp -d)
manager=
cleanup() {
  [ -n "$manager" ] && kill -9 "$manager" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
python3 - "$N" > "$work/big.json" <<'PY'
import json, sys
n = int(sys.argv[1])
json.dump({"name": "big", "jobs": [{"name": f"j{i}", "command": ["/bin/true"]} for i in range(n)]}, sys.stdout)
PY
echo "$N jobs, $(du -h "$work/big.json" | cut -f1) of JSON"
port=$((20000 + RANDOM % 20000))
for round in 1 2; do
  for bin in "${dirs[@]}"; do
    data="$work/data"
    rm -rf "$data"
    AAM_MAX_JOBS_PER_SESSION=$N "$bin/aam-manager" --data-dir "$data" --http off \
      --listen "127.0.0.1:$port" > "$work/manager.log" 2>&1 &
    manager=$!
    aam=("$bin/aam" --manager "127.0.0.1:$port" --token-file "$data/token" --ca "$data/tls/cert.pem")
    for _ in $(seq 400); do
      "${aam[@]}" workers > /dev/null 2>&1 && break
      sleep 0.05
    done
    start=$(date +%s%N)
    /usr/bin/time -f %M -o "$work/peak" "${aam[@]}" submit "$work/big.json" > "$work/answer" 2>&1
    end=$(date +%s%N)
    echo "$bin: aam submit answered in $(( (end - start) / 1000000 )) ms, CLI peak RSS $(( $(cat "$work/peak") / 1024 )) MiB: $(head -1 "$work/answer")"
    kill -9 "$manager"; wait "$manager" 2>/dev/null || true
    manager=
  done
done
