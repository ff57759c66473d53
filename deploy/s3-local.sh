#!/usr/bin/env bash
# A real S3 endpoint on loopback for tests: a one-node Ceph cluster (mon + memstore OSD + radosgw), no mgr.
#
#   deploy/s3-local.sh start   # install (apt, if missing), start, create user + bucket, write $STATE/env.sh
#   deploy/s3-local.sh env     # print the export lines (source <(deploy/s3-local.sh env))
#   deploy/s3-local.sh status  # exit 0 when the S3 endpoint answers
#   deploy/s3-local.sh stop    # kill what start started and remove the state directory
#
# Settings (environment): ASSETMINT_CEPH_STATE (/tmp/assetmint-ceph), ASSETMINT_S3_PORT (7480),
# ASSETMINT_CEPH_MON_PORT (6789; msgr2 uses it + 1), ASSETMINT_S3_BUCKET (assetmint-test),
# ASSETMINT_CEPH_START_TIMEOUT (90 seconds). Everything binds 127.0.0.1 only; auth is off; data lives in RAM.
set -euo pipefail

STATE="${ASSETMINT_CEPH_STATE:-/tmp/assetmint-ceph}"
PORT="${ASSETMINT_S3_PORT:-7480}"
MON_PORT="${ASSETMINT_CEPH_MON_PORT:-6789}"
MON2_PORT="$((MON_PORT + 1))"
BUCKET="${ASSETMINT_S3_BUCKET:-assetmint-test}"
TIMEOUT="${ASSETMINT_CEPH_START_TIMEOUT:-90}"
REGION="us-east-1"
ACCESS_KEY="assetmint-test-access"
SECRET_KEY="assetmint-test-secret-0123456789abcdef"
ENDPOINT="http://127.0.0.1:${PORT}"
CONF="$STATE/ceph.conf"
PACKAGES=(ceph-mon ceph-osd radosgw curl uuid-runtime)

log() { echo "s3-local: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ceph_() { timeout 30 ceph -c "$CONF" --connect-timeout 20 "$@"; }

install_packages() {
    local missing=()
    command -v ceph-mon >/dev/null || missing+=(ceph-mon)
    command -v ceph-osd >/dev/null || missing+=(ceph-osd)
    command -v radosgw >/dev/null || missing+=(radosgw)
    command -v curl >/dev/null || missing+=(curl)
    command -v uuidgen >/dev/null || missing+=(uuid-runtime)
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; run as root or: sudo apt-get install -y ${PACKAGES[*]}"
    log "installing ${missing[*]} with apt"
    local t0=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"/tmp/assetmint-ceph-apt.log" 2>&1 \
        || { tail -20 /tmp/assetmint-ceph-apt.log >&2; die "apt-get install ${missing[*]} failed"; }
    log "installed in $((SECONDS - t0)) s"
}

s3_answers() {
    # Any HTTP answer from radosgw counts (an anonymous ListBuckets returns 200 with an empty owner).
    local code
    code=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "$ENDPOINT/" 2>/dev/null) || return 1
    [ "$code" != "000" ]
}

bucket_ready() {
    local code
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' --aws-sigv4 "aws:amz:${REGION}:s3" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --user "${ACCESS_KEY}:${SECRET_KEY}" -I "$ENDPOINT/$BUCKET") || return 1
    [ "$code" = "200" ]
}

fail_with_logs() {
    log "$1"
    for f in "$STATE"/log/*.log; do
        [ -f "$f" ] || continue
        echo "----- tail of $f -----" >&2
        tail -n 25 "$f" >&2
    done
    exit 1
}

write_conf() {
    local fsid="$1"
    cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:${MON2_PORT},v1:127.0.0.1:${MON_PORT}]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
ms bind ipv6 = false
ms bind ipv4 = true
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
# The 'none' auth protocol has no secure connection mode: daemons that prefer 'secure' (radosgw) never connect.
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon max pg per osd = 1000
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
# Each pool radosgw creates at first start is a monitor proposal: propose fast (one node, nothing to batch).
paxos propose interval = 0.05
paxos min wait = 0.01
run dir = $STATE/run
pid file = $STATE/run/\$name.pid
admin socket = $STATE/run/\$name.asok
log file = $STATE/log/\$name.log
log to stderr = false
err to stderr = true
keyring = $STATE/keyring

[mon]
mon data = $STATE/mon/\$cluster-\$id

[osd]
osd data = $STATE/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 2147483648
osd memory target = 268435456

[client.rgw.local]
rgw frontends = beast endpoint=127.0.0.1:${PORT}
rgw data = $STATE/rgw
rgw thread pool size = 64
EOF
}

start() {
    install_packages
    if [ -f "$STATE/env.sh" ] && s3_answers && bucket_ready; then
        log "already running at $ENDPOINT (state $STATE)"
        cat "$STATE/env.sh"
        return 0
    fi
    if [ -d "$STATE" ]; then
        log "stale state in $STATE: stopping it first"
        stop
    fi
    if curl -s -o /dev/null -m 2 "$ENDPOINT/" 2>/dev/null; then
        die "something else already answers on $ENDPOINT; set ASSETMINT_S3_PORT to a free port"
    fi
    local t0=$SECONDS
    mkdir -p "$STATE"/{run,log,mon,osd,rgw}
    local fsid osd_uuid
    fsid=$(uuidgen)
    osd_uuid=$(uuidgen)
    write_conf "$fsid"
    # With auth none nothing checks keys, but the mkfs steps still want a keyring file to exist.
    ceph-authtool --create-keyring "$STATE/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    monmaptool --create --fsid "$fsid" \
        --addv a "[v2:127.0.0.1:${MON2_PORT},v1:127.0.0.1:${MON_PORT}]" "$STATE/monmap" >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$STATE/monmap" --keyring "$STATE/keyring" \
        || fail_with_logs "ceph-mon --mkfs failed"
    timeout 30 ceph-mon -c "$CONF" -i a || fail_with_logs "ceph-mon did not start"

    local osd_id
    osd_id=$(ceph_ osd new "$osd_uuid") || fail_with_logs "the monitor does not answer ('ceph osd new' failed)"
    mkdir -p "$STATE/osd/ceph-$osd_id"
    ceph-osd -c "$CONF" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >"$STATE/log/osd-mkfs.log" 2>&1 \
        || fail_with_logs "ceph-osd --mkfs failed"
    timeout 30 ceph-osd -c "$CONF" -i "$osd_id" 2>>"$STATE/log/osd-start.log" || fail_with_logs "ceph-osd did not start"

    # radosgw connects to the cluster before it daemonizes: bound that wait.
    timeout "$TIMEOUT" radosgw -c "$CONF" -n client.rgw.local || fail_with_logs "radosgw did not start"

    local deadline=$((SECONDS + TIMEOUT))
    until s3_answers; do
        [ "$SECONDS" -lt "$deadline" ] || fail_with_logs "radosgw did not answer on $ENDPOINT within ${TIMEOUT}s"
        kill -0 "$(cat "$STATE/run/client.rgw.local.pid" 2>/dev/null || echo 0)" 2>/dev/null \
            || fail_with_logs "radosgw exited before answering on $ENDPOINT"
        sleep 0.5
    done
    timeout 60 radosgw-admin -c "$CONF" user create --uid=assetmint-test --display-name="AssetMint tests" \
        --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$STATE/log/user-create.out" 2>&1 \
        || fail_with_logs "radosgw-admin user create failed: $(tail -3 "$STATE/log/user-create.out")"
    until curl -s -o /dev/null -m 10 --fail --aws-sigv4 "aws:amz:${REGION}:s3" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --user "${ACCESS_KEY}:${SECRET_KEY}" -X PUT "$ENDPOINT/$BUCKET"; do
        [ "$SECONDS" -lt "$deadline" ] || fail_with_logs "could not create bucket $BUCKET within ${TIMEOUT}s"
        sleep 0.5
    done
    bucket_ready || fail_with_logs "bucket $BUCKET was created but HEAD does not see it"
    cat >"$STATE/env.sh" <<EOF
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_ENDPOINT_URL_S3=$ENDPOINT
export AWS_DEFAULT_REGION=$REGION
export ASSETMINT_TEST_S3_BUCKET=$BUCKET
EOF
    log "S3 ready at $ENDPOINT (bucket $BUCKET) in $((SECONDS - t0)) s; source $STATE/env.sh"
    cat "$STATE/env.sh"
}

stop() {
    local pids=() f pid
    for f in "$STATE"/run/*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        # Only kill processes that are ours: a ceph daemon whose command line names this state's config.
        if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONF"; then
            pids+=("$pid")
        fi
    done
    if [ "${#pids[@]}" -gt 0 ]; then
        kill "${pids[@]}" 2>/dev/null || true
        for _ in $(seq 1 50); do
            local alive=0
            for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ "$alive" -eq 0 ] && break
            sleep 0.2
        done
        for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    fi
    case "$STATE" in
        /|"") die "refusing to remove state directory '$STATE'" ;;
    esac
    rm -rf "$STATE"
    log "stopped (${#pids[@]} processes) and removed $STATE"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env)
        [ -f "$STATE/env.sh" ] || die "not started: run '$0 start' first (no $STATE/env.sh)"
        cat "$STATE/env.sh"
        ;;
    status)
        if [ -f "$STATE/env.sh" ] && s3_answers; then
            echo "running: $ENDPOINT (state $STATE)"
        else
            echo "not running (state $STATE)"
            exit 1
        fi
        ;;
    *)
        echo "usage: $0 start|stop|env|status" >&2
        exit 2
        ;;
esac
