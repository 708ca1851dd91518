#!/usr/bin/env bash
# Measures the issue-4 targets: a 3-node cluster on 127.0.0.1 (separate processes, fjall in a
# temp dir), then `dynakv bench` in its own process, each case 3 times; prints every run's
# table and writes JSON per run into the output directory.
#
#   benches/targets.sh [OUT_DIR]        (default: target/bench-results)
#   SUITE=consistency benches/targets.sh [OUT_DIR]
#                                       quorum vs linearizable: workloads w and b at c=1 and c=64
#   SUITE=reads benches/targets.sh [OUT_DIR]
#                                       the read cases only: workload b at c=64, c at c=1 (with
#                                       BIN set to two builds in turn, an A/B of the read path)
#
# Environment: BIN (default target/release/dynakv, build it first), PORT_BASE (default 17410),
# OPS (default 100000), RUNS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/dynakv}
PORT_BASE=${PORT_BASE:-17410}
OPS=${OPS:-100000}
RUNS=${RUNS:-3}
SUITE=${SUITE:-targets}
OUT=${1:-target/bench-results}
mkdir -p "$OUT"
WORK=$(mktemp -d)
# shellcheck source=benches/cluster.sh
source benches/cluster.sh
cleanup() {
    stop_cluster
    rm -rf "$WORK"
}
trap cleanup EXIT

# bench NAME ARGS...: RUNS runs of one case.
bench() {
    local name=$1; shift
    for run in $(seq "$RUNS"); do
        echo "== $name run $run"
        "$BIN" bench --ring "$WORK/ring.toml" --client-threads 1 --max-duration 120s --json "$OUT/$name-$run.json" "$@"
    done
}

if [[ "$SUITE" == consistency ]]; then
    start_cluster os
    # Loads the keyspace once; every run after it reuses it.
    "$BIN" bench --ring "$WORK/ring.toml" --workload c --ops 1 --concurrency 1 > /dev/null
    for level in quorum linearizable; do
        bench "w-c64-$level" --no-preload --workload w --ops "$OPS" --concurrency 64 --consistency "$level"
        bench "b-c64-$level" --no-preload --workload b --ops "$OPS" --concurrency 64 --consistency "$level"
        bench "w-c1-$level" --no-preload --workload w --ops $((OPS / 10)) --concurrency 1 --consistency "$level"
        bench "b-c1-$level" --no-preload --workload b --ops $((OPS / 10)) --concurrency 1 --consistency "$level"
    done
    exit 0
fi

if [[ "$SUITE" == reads ]]; then
    start_cluster os
    "$BIN" bench --ring "$WORK/ring.toml" --workload c --ops 1 --concurrency 1 > /dev/null
    bench b-c64 --no-preload --workload b --ops "$OPS" --concurrency 64
    bench c1-get --no-preload --workload c --ops $((OPS / 10)) --concurrency 1
    exit 0
fi

start_cluster os
bench w-c64 --workload w --ops "$OPS" --concurrency 64
bench c1-put --workload w --ops $((OPS / 10)) --concurrency 1
# Loads the keyspace once; the runs after it reuse it.
"$BIN" bench --ring "$WORK/ring.toml" --workload c --ops 1 --concurrency 1 > /dev/null
bench b-c64 --no-preload --workload b --ops "$OPS" --concurrency 64
bench c1-get --no-preload --workload c --ops $((OPS / 10)) --concurrency 1
bench w-c64-no-coalesce --workload w --ops $((OPS / 4)) --concurrency 64 --no-coalesce
start_cluster always
bench w-c64-sync-always --workload w --ops "$OPS" --concurrency 64
