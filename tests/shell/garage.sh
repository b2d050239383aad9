# Real Garage S3 servers on loopback for the tests. Source after lib.sh.
# `start_garage DIR` runs a single node (what FV_STORE=s3 uses), sets
# AWS_* for fogvault and GARAGE_BUCKET; garage_config, garage_node_start and
# garage_access are its parts, for suites that build a cluster (garage3.sh).
# Servers stop with the test (they are in FV_PIDS).
# Needs the `garage` binary (scripts/deps.sh s3 installs it with cargo).

garage_bin() { command -v garage || echo "$HOME/.cargo/bin/garage"; }

# garage_config DIR PORT REPLICATION SECRET [TOML…] → DIR/garage.toml for a node
# with its S3 API on 127.0.0.1:PORT and RPC on PORT+1 (extra top-level TOML
# lines may follow). Blocks are stored uncompressed,
# so a grep of the node's directories sees exactly what fogvault uploaded
# (zstd would hide plaintext from the stolen-disk checks).
garage_config() {
    local dir="$1" port="$2" rf="$3" secret="$4"
    shift 4
    mkdir -p "$dir/meta" "$dir/data"
    cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = $rf
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$((port + 1))"
rpc_public_addr = "127.0.0.1:$((port + 1))"
rpc_secret = "$secret"
$(printf '%s\n' "$@")

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"
TOML
}

# garage_node_try DIR → starts the node configured in DIR (in FV_PIDS), waits
# until it answers; sets GARAGE_PID and GARAGE_NODE (its full id@host:port).
# Returns 1 (its log on stderr) when the server exits instead, e.g. because
# another process took one of its ports between free_ports and the bind.
garage_node_try() {
    local dir="$1" g; g=$(garage_bin)
    [ -x "$g" ] || fail "garage is not installed (run scripts/deps.sh s3)"
    "$g" -c "$dir/garage.toml" server >> "$dir/server.log" 2>&1 &
    GARAGE_PID=$!
    FV_PIDS+=("$GARAGE_PID")
    GARAGE_NODE=""
    local i
    for i in $(seq 1 150); do
        # `node id` reads the key on disk, so ask `status` first: the server answers.
        "$g" -c "$dir/garage.toml" status >/dev/null 2>&1 &&
            GARAGE_NODE=$("$g" -c "$dir/garage.toml" node id -q 2>/dev/null) && [ -n "$GARAGE_NODE" ] && return 0
        kill -0 "$GARAGE_PID" 2>/dev/null || break
        sleep 0.2
    done
    kill "$GARAGE_PID" 2>/dev/null || true
    wait "$GARAGE_PID" 2>/dev/null || true
    tail -n 30 "$dir/server.log" >&2
    return 1
}

# garage_node_start DIR → garage_node_try, failing the suite when the node does not start
garage_node_start() { garage_node_try "$1" || fail "garage in $1 did not start"; }

# garage_access PORT → creates the test bucket and a key through $GARAGE (a CLI
# bound to one node), exports AWS_* for fogvault and GARAGE_BUCKET
garage_access() {
    local port="$1" keyfile="$FV_TMP/garage-key.txt"
    $GARAGE bucket create fogvault >/dev/null
    $GARAGE key create fogvault-test > "$keyfile"
    $GARAGE bucket allow --read --write --owner fogvault --key fogvault-test >/dev/null
    export AWS_ACCESS_KEY_ID=$(sed -n 's/^Key ID: *//p' "$keyfile")
    export AWS_SECRET_ACCESS_KEY=$(sed -n 's/^Secret key: *//p' "$keyfile")
    [ -n "$AWS_ACCESS_KEY_ID" ] && [ -n "$AWS_SECRET_ACCESS_KEY" ] || { cat "$keyfile" >&2; fail "cannot read the garage key"; }
    export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=garage AWS_ALLOW_HTTP=true
    export GARAGE_BUCKET=fogvault
}

# start_garage DIR → a single-node Garage in DIR on free loopback ports (S3 API
# on GARAGE_PORT, RPC on the next one), the test bucket and key. A start that
# loses a port race is retried on other ports.
start_garage() {
    local dir="$1" attempt
    for attempt in 1 2 3; do
        GARAGE_PORT=$(free_ports 2)
        rm -rf "$dir"
        garage_config "$dir" "$GARAGE_PORT" 1 "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
        garage_node_try "$dir" && break
        echo "garage did not start on port $GARAGE_PORT (attempt $attempt); trying other ports" >&2
        [ "$attempt" = 3 ] && fail "garage in $dir did not start"
    done
    GARAGE="$(garage_bin) -c $dir/garage.toml"
    $GARAGE layout assign -z dc1 -c 1G "${GARAGE_NODE%%@*}" >/dev/null
    $GARAGE layout apply --version 1 >/dev/null
    garage_access "$GARAGE_PORT"
}

# s3_req METHOD KEY [curl args] → a signed request for object KEY of the test bucket
s3_req() {
    local method="$1" key="$2"; shift 2
    curl -sf --aws-sigv4 "aws:amz:garage:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X "$method" "$AWS_ENDPOINT_URL/$GARAGE_BUCKET/$key" "$@"
}

# s3_list PREFIX → "KEY SIZE" of every object under PREFIX in the test bucket, one per line
# (follows continuation tokens: a listing is cut at 1000 keys a page)
s3_list() {
    python3 - "$1" <<'PY'
import re, subprocess, sys, os, urllib.parse
prefix, token = sys.argv[1], None
while True:
    q = "list-type=2&prefix=" + urllib.parse.quote(prefix, safe="")
    if token:
        q += "&continuation-token=" + urllib.parse.quote(token, safe="")
    xml = subprocess.run(["curl", "-sf", "--aws-sigv4", "aws:amz:garage:s3",
                          "--user", os.environ["AWS_ACCESS_KEY_ID"] + ":" + os.environ["AWS_SECRET_ACCESS_KEY"],
                          "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                          f"{os.environ['AWS_ENDPOINT_URL']}/{os.environ['GARAGE_BUCKET']}?{q}"],
                         check=True, capture_output=True, text=True).stdout
    for c in re.findall(r"<Contents>(.*?)</Contents>", xml, re.S):
        print(re.search(r"<Key>([^<]+)</Key>", c).group(1), re.search(r"<Size>(\d+)</Size>", c).group(1))
    m = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", xml)
    if "<IsTruncated>true</IsTruncated>" not in xml or not m:
        break
    token = m.group(1)
PY
}

# s3_keys PREFIX → object keys under PREFIX in the test bucket, one per line
s3_keys() { s3_list "$1" | cut -d' ' -f1; }
