#!/usr/bin/env bash
# The same workload — N (default 10,000) jobs of /bin/true, two at a time —
# through aam (one manager, one worker with 2 slots, default settings),
# Celery 5 (Redis broker and result backend, a prefork worker of
# concurrency 2), GNU parallel (-j2) and xargs -P2 (the raw spawn rate),
# in one run, so the rates compare on the same machine at the same time.
# Prints jobs/s for each and its ratio to the raw rate.
#
#   cargo build --release          # aam's binaries, from target/release
#   bench/peers/run.sh             # N=2000 bench/peers/run.sh for a quick look
#   AAM_WORKER_ARGS="--prefetch 0" bench/peers/run.sh   # flags for aam's worker
#
# Installs what it needs when missing: Debian's redis-server and parallel
# (apt-get, as root), and a virtualenv with celery and redis in
# bench/peers/.venv (pip; bench/peers/requirements.txt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
N=${N:-10000}
bin=${AAM_BIN_DIR:-$root/target/release}
for b in aam aam-manager aam-worker; do
  [ -x "$bin/$b" ] || { echo "no $bin/$b: run cargo build --release first" >&2; exit 2; }
done
if ! command -v redis-server >/dev/null || ! command -v parallel >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server parallel
fi
if ! "$here/.venv/bin/python" -c 'import celery, redis' 2>/dev/null; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
rate() { awk -v n="$N" -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", n / (b - a) }'; }

# --- raw: xargs -P2 spawning /bin/true --------------------------------------
t0=$(now); seq "$N" | xargs -P2 -I{} /bin/true; t1=$(now)
raw=$(rate "$t0" "$t1")

# --- aam -----------------------------------------------------------------
token=peer-bench-token
"$bin/aam-manager" --listen 127.0.0.1:0 --http off --data-dir "$work/aam" --token "$token" \
  >"$work/manager.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [ -s "$work/aam/manager.addr" ] && break; sleep 0.05; done
addr=$(cat "$work/aam/manager.addr")
export AAM_MANAGER=$addr AAM_TOKEN=$token AAM_CA=$work/aam/tls/cert.pem
"$bin/aam-worker" --slots 2 --name bench ${AAM_WORKER_ARGS:-} >"$work/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do "$bin/aam" workers 2>/dev/null | grep -q bench && break; sleep 0.05; done
python3 - "$N" >"$work/batch.json" <<'PY'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"name": "peers", "jobs": [{"name": f"j{i}", "command": ["/bin/true"]} for i in range(n)]}))
PY
t0=$(now)
session=$("$bin/aam" submit "$work/batch.json")
"$bin/aam" wait "$session" >/dev/null 2>&1
t1=$(now)
aam=$(rate "$t0" "$t1")
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()
unset AAM_MANAGER AAM_TOKEN AAM_CA

# --- Celery 5, Redis broker and result backend -------------------------------
port=16379
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
cat >"$work/tasks.py" <<PY
import subprocess
from celery import Celery
app = Celery("tasks", broker="redis://127.0.0.1:$port/0", backend="redis://127.0.0.1:$port/1")
app.conf.worker_prefetch_multiplier = 4

@app.task
def run():
    return subprocess.run(["/bin/true"]).returncode
PY
(cd "$work" && exec "$here/.venv/bin/celery" -A tasks worker --concurrency 2 --pool prefork \
  --loglevel warning >"$work/celery.log" 2>&1) &
pids+=($!)
(cd "$work" && "$here/.venv/bin/python" - <<'PY'
import time
from tasks import app, run
deadline = time.time() + 60
while time.time() < deadline and not app.control.ping(timeout=0.5):
    pass
PY
)
t0=$(now)
(cd "$work" && "$here/.venv/bin/python" - "$N" <<'PY'
import sys
from celery import group
from tasks import run
n = int(sys.argv[1])
results = group(run.s() for _ in range(n)).apply_async()
codes = results.get(timeout=3600)
assert len(codes) == n and not any(codes), "every task ran /bin/true"
PY
)
t1=$(now)
celery=$(rate "$t0" "$t1")

# --- GNU parallel -j2 ---------------------------------------------------------
t0=$(now); seq "$N" | parallel -j2 -N0 /bin/true; t1=$(now)
gnu=$(rate "$t0" "$t1")

ratio() { awk -v a="$1" -v b="$raw" 'BEGIN { printf "%.2f", a / b }'; }
echo "$N jobs of /bin/true, two at a time, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
printf '%-34s %8s jobs/s  %s of raw\n' "raw (xargs -P2)" "$raw" "1.00"
printf '%-34s %8s jobs/s  %s of raw\n' "aam (1 manager, 1 worker, 2 slots)" "$aam" "$(ratio "$aam")"
printf '%-34s %8s jobs/s  %s of raw\n' "Celery 5 + Redis (concurrency 2)" "$celery" "$(ratio "$celery")"
printf '%-34s %8s jobs/s  %s of raw\n' "GNU parallel -j2" "$gnu" "$(ratio "$gnu")"
