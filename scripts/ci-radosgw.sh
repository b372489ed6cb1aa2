#!/usr/bin/env bash
# Starts a throwaway S3 endpoint for the store tests: Ceph's RADOS Gateway from Debian's packages,
# with one monitor and one memstore OSD (size-1 pools), everything under one temporary directory,
# no systemd, no mgr. Writes the connection facts to $DELTASYNC_CI_DIR/radosgw.env (default
# /tmp/deltasync-ci), which test/helpers/stores.ts reads:
#   DELTASYNC_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
#
# Idempotent: when the env file exists and the gateway answers, it only checks (well under a
# second). Usable by hand (as root): `bash scripts/ci-radosgw.sh`, then `. /tmp/deltasync-ci/radosgw.env`.
# `bash scripts/ci-radosgw.sh stop` stops the daemons and removes the directory.
#
# Facts measured on Debian 12 (Ceph 16): it starts in ~2 s with `paxos propose interval = 0.01`
# (18 s without); with `auth ... = none` radosgw also needs `ms mon client mode = crc` or it never
# listens; `tcp_nodelay=1` on the beast frontend cuts ~50 ms off every small request.
set -euo pipefail

CI_DIR=${DELTASYNC_CI_DIR:-/tmp/deltasync-ci}
ROOT=$CI_DIR/ceph
ENV_FILE=$CI_DIR/radosgw.env
CONF=$ROOT/ceph.conf
WAIT_SECONDS=${CI_SERVICES_WAIT_SECONDS:-60}
# Throwaway credentials of a throwaway gateway on 127.0.0.1: not secrets.
ACCESS_KEY=deltasynctest
SECRET_KEY=deltasynctestsecret

export DEBIAN_FRONTEND=noninteractive

log() { echo "ci-radosgw: $*" >&2; }
# What the daemons said last: the one place a failed start explains itself.
show_logs() {
  local f
  for f in "$ROOT"/log/osd-start.log "$ROOT"/log/osd.*.log "$ROOT"/log/mon.a.log "$ROOT"/log/client.rgw.gw.log; do
    [[ -s $f ]] || continue
    echo "ci-radosgw: --- last lines of $f" >&2
    tail -n 15 "$f" >&2
  done
}
die() {
  echo "ci-radosgw: ERROR: $*" >&2
  show_logs
  exit 1
}

# A TCP port nothing listens on, starting from $1.
free_port() {
  local port=$1
  # Something answers a connection there: taken (bash's /dev/tcp, no extra package needed).
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

wait_for() {
  local what=$1
  shift
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
  log "$what is up"
}

gateway_answers() {
  [[ -f $ENV_FILE ]] || return 1
  # shellcheck disable=SC1090
  local endpoint
  endpoint=$(sed -n 's/^DELTASYNC_TEST_S3_ENDPOINT=//p' "$ENV_FILE")
  [[ -n $endpoint ]] && curl -fsS -o /dev/null --max-time 2 "$endpoint"
}

# Stops the daemons of an earlier run and waits until they are gone: a daemon still shutting down
# would talk to the next cluster's monitor with the old fsid.
# Daemons are found by the configuration file on their command line, not only by pid file: a
# pid file can be gone while its daemon lives on (and such an OSD keeps answering the next
# cluster's monitor as osd.0), and a pid in a stale pid file can belong to anything by now.
stop_all() {
  local pids=() pid
  for pid in $(pgrep -f -- "-c $CONF" || true); do
    kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  local deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [[ $(ps -o stat= -p "$pid") != Z* ]]; do
      if ((SECONDS >= deadline)); then
        kill -9 "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
  done
  rm -rf "$ROOT" "$ENV_FILE"
}

if [[ ${1:-} == stop ]]; then
  stop_all
  exit 0
fi

if gateway_answers; then
  log "radosgw already answers ($(sed -n 's/^DELTASYNC_TEST_S3_ENDPOINT=//p' "$ENV_FILE"))"
  exit 0
fi

missing=()
for tool in ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw ceph:ceph-common curl:curl; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]} > 0)); then
  [[ $(id -u) -eq 0 ]] || die "must run as root to install ${missing[*]}"
  log "apt-get install ${missing[*]}"
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
fi

# A half-started cluster from an earlier run is not worth repairing: start over.
stop_all
mkdir -p "$ROOT"/{run,log,mon,osd} "$CI_DIR"

MON_PORT=$(free_port 16789)
RGW_PORT=$(free_port 17480)
FSID=$(cat /proc/sys/kernel/random/uuid)

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:$MON_PORT
mon initial members = a
public network = 127.0.0.1/32
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = $ROOT/run
pid file = $ROOT/run/\$name.pid
admin socket = $ROOT/run/\$name.asok
log file = $ROOT/log/\$name.log
mon data = $ROOT/mon/\$name
osd data = $ROOT/osd/\$name
osd objectstore = memstore
memstore device bytes = 4294967296
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
paxos propose interval = 0.01
[client.rgw.gw]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw dns name = localhost
EOF

ceph() { command ceph -c "$CONF" "$@"; }

log "monitor on 127.0.0.1:$MON_PORT"
monmaptool --create --clobber --fsid "$FSID" --addv a "[v1:127.0.0.1:$MON_PORT]" "$ROOT/monmap" >/dev/null
ceph-authtool --create-keyring "$ROOT/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$ROOT/monmap" --keyring "$ROOT/mon.keyring" ||
  die "ceph-mon --mkfs failed"
ceph-mon -c "$CONF" -i a || die "ceph-mon did not start"
wait_for "monitor" ceph --connect-timeout 2 mon stat || die "the monitor does not answer"

log "memstore OSD"
OSD_ID=$(ceph osd create)
mkdir -p "$ROOT/osd/osd.$OSD_ID"
ceph-osd -c "$CONF" -i "$OSD_ID" --mkfs >/dev/null 2>&1 || die "ceph-osd --mkfs failed"
# ceph-osd returns only once its daemon has registered with the monitor; on a loaded machine that
# can time out once, so it gets three tries before the script gives up.
for attempt in 1 2 3; do
  ceph-osd -c "$CONF" -i "$OSD_ID" 2>>"$ROOT/log/osd-start.log" && break
  ((attempt < 3)) || die "ceph-osd did not start (3 tries)"
  log "ceph-osd did not start (try $attempt of 3); trying again"
  sleep 2
done
wait_for "OSD" bash -c "command ceph -c '$CONF' osd stat | grep -q '1 up'" || die "the OSD never came up"

log "radosgw on 127.0.0.1:$RGW_PORT"
radosgw -c "$CONF" -n client.rgw.gw || die "radosgw did not start"
ENDPOINT=http://127.0.0.1:$RGW_PORT
wait_for "radosgw" curl -fsS -o /dev/null --max-time 2 "$ENDPOINT" || die "radosgw never listened"

radosgw-admin -c "$CONF" user create --uid=deltasync --display-name=deltasync \
  --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null ||
  die "radosgw-admin user create failed"

cat >"$ENV_FILE.tmp" <<EOF
DELTASYNC_TEST_S3_ENDPOINT=$ENDPOINT
AWS_ACCESS_KEY_ID=$ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$SECRET_KEY
AWS_REGION=us-east-1
EOF
mv "$ENV_FILE.tmp" "$ENV_FILE"
log "ready: $ENDPOINT (facts in $ENV_FILE)"
