#!/usr/bin/env bash
# Scale: one 3-node cluster (`dynakv dev`, default ring settings: anti-entropy every 30 s) per
# keyspace size in KEYS, each loaded with its keys of 1 KiB at W = N, then
#   - node RSS (VmRSS of each node process) after the load, per million keys;
#   - ROUNDS idle anti-entropy rounds on n1 (`dynakv repair --node n1`, nothing differs);
#   - workloads w and b at c=64, RUNS runs each, alternating between the clusters run by run,
#     so every size sees the same machine.
# The replica deadline is 10 s instead of 1 s, so the load at W = N rides out compaction stalls.
# Prints every figure and writes the JSON of each run and round into OUT_DIR.
#
#   KEYS="2000000 100000" benches/scale.sh [OUT_DIR]     (default: target/bench-results/scale)
#
# Environment: BIN (default target/release/dynakv, build it first), KEYS (default "100000"),
# OPS (default 100000), RUNS (default 3), ROUNDS (default 5), PORT_BASE (default 17420).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/dynakv}
KEYS=${KEYS:-100000}
OPS=${OPS:-100000}
RUNS=${RUNS:-3}
ROUNDS=${ROUNDS:-5}
PORT_BASE=${PORT_BASE:-17420}
OUT=${1:-target/bench-results/scale}
mkdir -p "$OUT"
WORK=$(mktemp -d)
CLUSTERS=()
cleanup() {
    for pid in ${CLUSTERS[@]+"${CLUSTERS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=benches/cluster.sh
source benches/cluster.sh

# start KEYS PORT: a cluster for KEYS keys on ports PORT+1..PORT+3, in $WORK/KEYS.
start() {
    launch_cluster "$WORK/$1" "$2" "s/^request_ms = 1000/request_ms = 10000/"
    CLUSTERS+=("$LAUNCHED")
    echo "$LAUNCHED" > "$WORK/$1/pid"
}

port=$PORT_BASE
for keys in $KEYS; do
    start "$keys" "$port"
    port=$((port + 10))
    echo "== $keys keys: load"
    started=$(date +%s)
    "$BIN" bench --ring "$WORK/$keys/ring.toml" --client-threads 1 --max-duration 3600s \
        --keys "$keys" --workload c --ops 1 --concurrency 64 > /dev/null
    echo "loaded in $(( $(date +%s) - started )) s"
    echo "== $keys keys: node RSS after the load"
    for pid in $(pgrep -P "$(cat "$WORK/$keys/pid")"); do
        rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
        echo "pid $pid: $((rss_kb / 1024)) MiB, $(( rss_kb * 1000000 / keys / 1024 )) MiB per million keys"
    done | tee "$OUT/rss-$keys.txt"
    echo "== $keys keys: $ROUNDS idle anti-entropy rounds on n1"
    for round in $(seq "$ROUNDS"); do
        # A round that could not compare every range exits 1; its report says why.
        "$BIN" repair --ring "$WORK/$keys/ring.toml" --node n1 --json > "$OUT/idle-round-$keys-$round.json" || true
        cat "$OUT/idle-round-$keys-$round.json"; echo
    done
done

for name in w b; do
    for run in $(seq "$RUNS"); do
        for keys in $KEYS; do
            echo "== $name-c64, $keys keys, run $run"
            pids=$(pgrep -P "$(cat "$WORK/$keys/pid")" | paste -sd,)
            "$BIN" bench --ring "$WORK/$keys/ring.toml" --client-threads 1 --max-duration 120s \
                --keys "$keys" --no-preload --node-pids "$pids" --workload "$name" --ops "$OPS" \
                --concurrency 64 --json "$OUT/$name-c64-$keys-$run.json"
        done
    done
done
