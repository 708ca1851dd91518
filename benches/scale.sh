#!/usr/bin/env bash
# Scale: a 3-node cluster (`dynakv dev`, default ring settings, anti-entropy every 30 s, but a
# 10 s replica deadline so the load at W = N rides out compaction stalls) loaded with KEYS keys
# of 1 KiB at W = N, then
#   - idle anti-entropy rounds on n1 (`dynakv repair --node n1`, nothing differs), ROUNDS of them;
#   - node RSS (VmRSS of each node process) after the load, per million keys;
#   - workloads w and b at c=64, RUNS runs each, on the loaded keyspace.
# Prints every figure and writes JSON per run into OUT_DIR.
#
#   KEYS=2000000 benches/scale.sh [OUT_DIR]      (default: target/bench-results/scale-KEYS)
#
# Environment: BIN (default target/release/dynakv, build it first), KEYS (default 100000),
# OPS (default 100000), RUNS (default 3), ROUNDS (default 5), PORT_BASE (default 17420).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/dynakv}
KEYS=${KEYS:-100000}
OPS=${OPS:-100000}
RUNS=${RUNS:-3}
ROUNDS=${ROUNDS:-5}
PORT_BASE=${PORT_BASE:-17420}
OUT=${1:-target/bench-results/scale-$KEYS}
mkdir -p "$OUT"
WORK=$(mktemp -d)
CLUSTER=""
cleanup() {
    if [[ -n "$CLUSTER" ]]; then kill -TERM "$CLUSTER" 2>/dev/null || true; wait "$CLUSTER" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

sed -e "s/127.0.0.1:7401/127.0.0.1:$((PORT_BASE + 1))/" \
    -e "s/127.0.0.1:7402/127.0.0.1:$((PORT_BASE + 2))/" \
    -e "s/127.0.0.1:7403/127.0.0.1:$((PORT_BASE + 3))/" \
    -e "s/^request_ms = 1000/request_ms = 10000/" config/ring.toml > "$WORK/ring.toml"
"$BIN" dev --ring "$WORK/ring.toml" --data-root "$WORK/data" 2> "$WORK/dev.log" &
CLUSTER=$!
for _ in $(seq 100); do
    "$BIN" status --ring "$WORK/ring.toml" > /dev/null 2>&1 && break
    sleep 0.1
done

echo "== load $KEYS keys"
started=$(date +%s)
"$BIN" bench --ring "$WORK/ring.toml" --client-threads 1 --max-duration 3600s --keys "$KEYS" \
    --workload c --ops 1 --concurrency 64 > /dev/null
echo "loaded in $(( $(date +%s) - started )) s"

echo "== node RSS after the load"
for pid in $(pgrep -P "$CLUSTER"); do
    rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    echo "pid $pid: $((rss_kb / 1024)) MiB, $(( rss_kb * 1000000 / KEYS / 1024 )) MiB per million keys"
done | tee "$OUT/rss.txt"

echo "== $ROUNDS idle anti-entropy rounds on n1"
for round in $(seq "$ROUNDS"); do
    "$BIN" repair --ring "$WORK/ring.toml" --node n1 --json > "$OUT/idle-round-$round.json"
    cat "$OUT/idle-round-$round.json"; echo
done

PIDS=$(pgrep -P "$CLUSTER" | paste -sd,)
for name in w b; do
    for run in $(seq "$RUNS"); do
        echo "== $name-c64 run $run"
        "$BIN" bench --ring "$WORK/ring.toml" --client-threads 1 --max-duration 120s --keys "$KEYS" \
            --no-preload --node-pids "$PIDS" --workload "$name" --ops "$OPS" --concurrency 64 --json "$OUT/$name-c64-$run.json"
    done
done
