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

# launch_cluster DIR PORT [SED_EXPR...]: a cluster in DIR (ring.toml, data/, dev.log) on ports
# PORT+1..3, from config/ring.toml edited by the extra sed expressions; its `dynakv dev` pid in
# LAUNCHED. Waits up to 10 s for it to serve.
launch_cluster() {
    local dir=$1 port=$2 edits=()
    shift 2
    for expr in "$@"; do edits+=(-e "$expr"); done
    mkdir -p "$dir"
    sed -e "s/127.0.0.1:7401/127.0.0.1:$((port + 1))/" \
        -e "s/127.0.0.1:7402/127.0.0.1:$((port + 2))/" \
        -e "s/127.0.0.1:7403/127.0.0.1:$((port + 3))/" \
        ${edits[@]+"${edits[@]}"} config/ring.toml > "$dir/ring.toml"
    "$BIN" dev --ring "$dir/ring.toml" --data-root "$dir/data" 2> "$dir/dev.log" &
    LAUNCHED=$!
    for _ in $(seq 100); do
        "$BIN" status --ring "$dir/ring.toml" > /dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "cluster did not start" >&2; cat "$dir/dev.log" >&2; exit 1
}

# start_cluster SYNC: a fresh cluster in $WORK with sync = "os" or "always".
start_cluster() {
    stop_cluster
    rm -rf "$WORK/data"
    launch_cluster "$WORK" "$PORT_BASE" "s/^sync = \"os\"/sync = \"$1\"/"
    CLUSTER=$LAUNCHED
}
