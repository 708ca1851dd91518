#!/usr/bin/env bash
# dynakv side by side with etcd and Redis, on the workload shapes of `dynakv bench`: 100k keys
# of 1 KiB random values loaded first, uniform keys, closed loop at 1, 16 and 64 in flight;
# workload w (writes only) and b (95% reads, 5% updates). Systems, each on 127.0.0.1:
#   dynakv      3 node processes (`dynakv dev`, N=3 R=2 W=2, sync = "os"), driven by `dynakv bench`
#   etcd        3 members, each with its own data dir; the client knows all three endpoints
#   redis-wait  a Redis primary + 2 replicas (replicaof); every SET followed by WAIT 1 1000
#   redis       one Redis, no replicas, no WAIT (the moonshot column)
# Redis and etcd are driven by benches/peers (the `dynakv-peers` crate): one connection per
# in-flight operation for Redis, one shared client for etcd. Redis runs without snapshots or
# AOF (`--save '' --appendonly no`); etcd runs with its defaults (it fsyncs its log).
# Each run starts every system fresh, one system at a time, so they never share the cores.
# Prints one markdown table of the medians and writes it to OUT_DIR/peers.md, beside every
# run's JSON. Not part of the tests.
#
#   benches/peers.sh [OUT_DIR]          (default: target/peers-results)
#
# Environment: RUNS (default 3), OPS (operations per case at c=16 and c=64, a tenth of it at
# c=1; default 100000), PORT_BASE (default 17510: dynakv +1..3, Redis +11..14, etcd +21..23
# for clients and +31..33 for peers).
#
# redis-server and etcd-server are installed with apt-get when missing (as root, or through
# sudo). Their packages' own services are never started by this install: a policy-rc.d that
# refuses service starts is in place for it (the one already there, or a temporary one). Any
# system Redis or etcd already running is left alone: this script runs its own instances on
# its own ports and stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
OPS=${OPS:-100000}
PORT_BASE=${PORT_BASE:-17510}
OUT=${1:-target/peers-results}
BIN=target/release/dynakv
PEERS=target/release/dynakv-peers
mkdir -p "$OUT"
WORK=$(mktemp -d)
# shellcheck source=benches/cluster.sh
source benches/cluster.sh
# Server processes started here (Redis and etcd), and a policy-rc.d this script put in place.
SERVERS=()
POLICY=""
# Prefix for commands that need root: sudo when not run as root.
AS_ROOT=()
if [[ $EUID -ne 0 ]]; then AS_ROOT=(sudo); fi

stop_servers() {
    local pid
    for pid in ${SERVERS[@]+"${SERVERS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in ${SERVERS[@]+"${SERVERS[@]}"}; do wait "$pid" 2>/dev/null || true; done
    SERVERS=()
}
cleanup() {
    stop_cluster
    stop_servers
    if [[ -n "$POLICY" ]]; then ${AS_ROOT[@]+"${AS_ROOT[@]}"} rm -f "$POLICY" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# install_missing: redis-server and etcd-server from apt, only those not installed yet.
install_missing() {
    local missing=()
    command -v redis-server > /dev/null || missing+=(redis-server)
    command -v etcd > /dev/null || missing+=(etcd-server)
    if [[ ${#missing[@]} -eq 0 ]]; then return 0; fi
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        POLICY=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# Refuses service starts while benches/peers.sh installs packages.\nexit 101\n' \
            | ${AS_ROOT[@]+"${AS_ROOT[@]}"} tee "$POLICY" > /dev/null
        ${AS_ROOT[@]+"${AS_ROOT[@]}"} chmod 755 "$POLICY"
    fi
    echo "== installing ${missing[*]}"
    ${AS_ROOT[@]+"${AS_ROOT[@]}"} apt-get update -qq
    ${AS_ROOT[@]+"${AS_ROOT[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" > "$WORK/apt.log"
    if [[ -n "$POLICY" ]]; then ${AS_ROOT[@]+"${AS_ROOT[@]}"} rm -f "$POLICY"; POLICY=""; fi
}

# vendored_protoc: the protoc binary that the workspace's protoc-bin-vendored dependency ships.
vendored_protoc() {
    local host dir
    host=$(rustc -vV | sed -n 's/^host: //p')
    for dir in $(cargo metadata --format-version 1 --filter-platform "$host" \
        | grep -o '"manifest_path":"[^"]*/protoc-bin-vendored[^"]*/Cargo.toml"' \
        | sed -e 's/^"manifest_path":"//' -e 's|/Cargo.toml"$||'); do
        if "$dir/bin/protoc" --version > /dev/null 2>&1; then echo "$dir/bin/protoc"; return 0; fi
    done
    echo "no vendored protoc found" >&2; return 1
}

# wait_for WHAT COMMAND...: runs COMMAND every 0.1 s until it succeeds, for at most 30 s.
wait_for() {
    local what=$1; shift
    for _ in $(seq 300); do
        if "$@" > /dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "$what not ready after 30 s; logs in $WORK:" >&2
    tail -n 20 "$WORK"/*.log >&2 || true
    exit 1
}

# start_redis PORT [PRIMARY_PORT]: one Redis server, a replica of PRIMARY_PORT if given.
start_redis() {
    local port=$1 dir="$WORK/redis-$1"
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
        --daemonize no --logfile "$WORK/redis-$port.log" ${2:+--replicaof 127.0.0.1 "$2"} &
    SERVERS+=($!)
    wait_for "Redis on port $port" redis-cli -p "$port" ping
}

# replicas_online PORT COUNT: true once the primary on PORT streams to COUNT replicas.
replicas_online() {
    [[ $(redis-cli -p "$1" info replication | grep -c 'state=online') -ge $2 ]]
}

# start_etcd: a 3-member etcd cluster, each member with its own data dir.
start_etcd() {
    local i cluster=""
    for i in 1 2 3; do
        cluster+="${cluster:+,}e$i=http://127.0.0.1:$((PORT_BASE + 30 + i))"
    done
    for i in 1 2 3; do
        etcd --name "e$i" --data-dir "$WORK/etcd-e$i" \
            --listen-client-urls "http://127.0.0.1:$((PORT_BASE + 20 + i))" \
            --advertise-client-urls "http://127.0.0.1:$((PORT_BASE + 20 + i))" \
            --listen-peer-urls "http://127.0.0.1:$((PORT_BASE + 30 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((PORT_BASE + 30 + i))" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token dynakv-peers --logger zap --log-outputs stderr \
            2> "$WORK/etcd-e$i.log" &
        SERVERS+=($!)
    done
    for i in 1 2 3; do
        wait_for "etcd member e$i" curl -sf "http://127.0.0.1:$((PORT_BASE + 20 + i))/health"
    done
}

# start SYSTEM: starts SYSTEM fresh; sets ENDPOINTS for the driver.
start() {
    rm -rf "$WORK"/redis-* "$WORK"/etcd-*
    case $1 in
        dynakv) start_cluster os ;;
        etcd)
            start_etcd
            ENDPOINTS=127.0.0.1:$((PORT_BASE + 21)),127.0.0.1:$((PORT_BASE + 22)),127.0.0.1:$((PORT_BASE + 23))
            ;;
        redis-wait)
            local primary=$((PORT_BASE + 11))
            start_redis "$primary"
            start_redis $((primary + 1)) "$primary"
            start_redis $((primary + 2)) "$primary"
            wait_for "Redis replication" replicas_online "$primary" 2
            ENDPOINTS=127.0.0.1:$primary,127.0.0.1:$((primary + 1)),127.0.0.1:$((primary + 2))
            ;;
        redis)
            start_redis $((PORT_BASE + 14))
            ENDPOINTS=127.0.0.1:$((PORT_BASE + 14))
            ;;
    esac
}

# stop SYSTEM: stops what `start SYSTEM` started.
stop() {
    if [[ $1 == dynakv ]]; then stop_cluster; else stop_servers; fi
}

# bench SYSTEM ARGS...: one run of the bench tool for SYSTEM; a failed case is reported and
# the script goes on (its JSON, if written, counts the errors).
bench() {
    local system=$1; shift
    if [[ $system == dynakv ]]; then
        "$BIN" bench --ring "$WORK/ring.toml" --client-threads 1 --max-duration 120s "$@"
    else
        local pids
        pids=$(IFS=,; echo "${SERVERS[*]}")
        "$PEERS" run --system "$system" --endpoints "$ENDPOINTS" --server-pids "$pids" \
            --client-threads 1 --max-secs 120 "$@"
    fi || echo "!! $system $* failed" >&2
}

install_missing
echo "== building"
cargo build --release --quiet
PROTOC=${PROTOC:-$(vendored_protoc)} cargo build --release --quiet \
    --manifest-path benches/peers/Cargo.toml --target-dir target
rm -f "$OUT"/*.json

for run in $(seq "$RUNS"); do
    for system in dynakv etcd redis-wait redis; do
        echo "== run $run of $RUNS: $system"
        start "$system"
        # Loads the keyspace once; every case after it reuses it.
        bench "$system" --workload c --ops 1 --concurrency 1 > /dev/null
        for workload in w b; do
            for concurrency in 1 16 64; do
                ops=$OPS
                if [[ $concurrency -eq 1 ]]; then ops=$((OPS / 10)); fi
                bench "$system" --no-preload --workload "$workload" --ops "$ops" \
                    --concurrency "$concurrency" --json "$OUT/$system-$workload-c$concurrency-$run.json"
            done
        done
        stop "$system"
    done
done

{
    echo "dynakv $(git rev-parse --short HEAD), $(date -u +%F), $(nproc) cores, load average" \
        "$(cut -d' ' -f1-3 /proc/loadavg) at the end; $OPS operations per case ($((OPS / 10)) at c=1)."
    echo
    "$PEERS" table "$OUT" --runs "$RUNS"
} | tee "$OUT/peers.md"
