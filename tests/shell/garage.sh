# Start a real single-node Garage S3 server on loopback for the tests.
# Source after lib.sh. `start_garage DIR` sets AWS_* for fogvault and
# GARAGE_BUCKET; the server stops with the test (it is in FV_PIDS).
# Needs the `garage` binary (scripts/deps.sh s3 installs it with cargo).

garage_bin() { command -v garage || echo "$HOME/.cargo/bin/garage"; }

start_garage() {
    local dir="$1" port="${2:-3900}"
    local g; g=$(garage_bin)
    [ -x "$g" ] || fail "garage is not installed (run scripts/deps.sh s3)"
    mkdir -p "$dir/meta" "$dir/data"
    cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$((port + 1))"
rpc_public_addr = "127.0.0.1:$((port + 1))"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"
TOML
    GARAGE="$g -c $dir/garage.toml"
    $g -c "$dir/garage.toml" server > "$dir/server.log" 2>&1 &
    GARAGE_PID=$!
    FV_PIDS+=("$GARAGE_PID")
    local node="" i
    for i in $(seq 1 150); do
        $GARAGE status >/dev/null 2>&1 && node=$($GARAGE node id -q 2>/dev/null | cut -d@ -f1) && [ -n "$node" ] && break
        sleep 0.2
    done
    [ -n "$node" ] || { cat "$dir/server.log" >&2; fail "garage did not start"; }
    $GARAGE layout assign -z dc1 -c 1G "$node" >/dev/null
    $GARAGE layout apply --version 1 >/dev/null
    $GARAGE bucket create fogvault >/dev/null
    $GARAGE key create fogvault-test > "$dir/key.txt"
    $GARAGE bucket allow --read --write --owner fogvault --key fogvault-test >/dev/null
    export AWS_ACCESS_KEY_ID=$(sed -n 's/^Key ID: *//p' "$dir/key.txt")
    export AWS_SECRET_ACCESS_KEY=$(sed -n 's/^Secret key: *//p' "$dir/key.txt")
    [ -n "$AWS_ACCESS_KEY_ID" ] && [ -n "$AWS_SECRET_ACCESS_KEY" ] || { cat "$dir/key.txt" >&2; fail "cannot read the garage key"; }
    export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=garage AWS_ALLOW_HTTP=true
    GARAGE_BUCKET=fogvault
}

# s3_req METHOD KEY [curl args] → a signed request for object KEY of the test bucket
s3_req() {
    local method="$1" key="$2"; shift 2
    curl -sf --aws-sigv4 "aws:amz:garage:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X "$method" "$AWS_ENDPOINT_URL/$GARAGE_BUCKET/$key" "$@"
}

# s3_keys PREFIX → object keys under PREFIX in the test bucket, one per line
s3_keys() {
    local q; q=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1")
    curl -sf --aws-sigv4 "aws:amz:garage:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$AWS_ENDPOINT_URL/$GARAGE_BUCKET?list-type=2&prefix=$q" |
        python3 -c 'import re,sys; print("\n".join(re.findall(r"<Key>([^<]+)</Key>", sys.stdin.read())))'
}
