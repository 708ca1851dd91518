# A 3-node dynakv cluster on 127.0.0.1 for the benchmark scripts, which source this file:
# `dynakv dev` (three node processes, fjall under $WORK/data) with a copy of config/ring.toml
# whose nodes listen on ports PORT_BASE+1..3. Needs BIN, WORK and PORT_BASE; writes
# $WORK/ring.toml and keeps the `dynakv dev` pid in CLUSTER.

CLUSTER=""

# stop_cluster: stops the cluster started here, if one runs.
stop_cluster() {
    if [[ -n "$CLUSTER" ]]; then
        kill -TERM "$CLUSTER" 2>/dev/null || true
        wait "$CLUSTER" 2>/dev/null || true
        CLUSTER=""
    fi
}

# start_cluster SYNC: a fresh cluster with sync = "os" or "always"; waits up to 10 s for it.
start_cluster() {
    stop_cluster
    rm -rf "$WORK/data"
    sed -e "s/127.0.0.1:7401/127.0.0.1:$((PORT_BASE + 1))/" \
        -e "s/127.0.0.1:7402/127.0.0.1:$((PORT_BASE + 2))/" \
        -e "s/127.0.0.1:7403/127.0.0.1:$((PORT_BASE + 3))/" \
        -e "s/^sync = \"os\"/sync = \"$1\"/" config/ring.toml > "$WORK/ring.toml"
    "$BIN" dev --ring "$WORK/ring.toml" --data-root "$WORK/data" 2> "$WORK/dev.log" &
    CLUSTER=$!
    for _ in $(seq 100); do
        "$BIN" status --ring "$WORK/ring.toml" > /dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "cluster did not start" >&2; cat "$WORK/dev.log" >&2; exit 1
}
