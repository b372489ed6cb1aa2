#!/usr/bin/env bash
# Starts a throwaway OpenSSH server for the SFTP store tests: Debian's sshd on 127.0.0.1 on a spare
# port, with its own host key, a user key for a test user and a data directory, all under
# $DELTASYNC_CI_DIR/sshd (default /tmp/deltasync-ci), no systemd. Writes the connection facts to
# $DELTASYNC_CI_DIR/sshd.env, which test/helpers/stores.ts reads:
#   DELTASYNC_TEST_SFTP_HOST, _PORT, _USER, _KEY (private key file), _KNOWN_HOSTS, _DIR,
#   _FINGERPRINT (the host key's SHA256 fingerprint)
#
# Idempotent: when the env file exists and sshd answers, it only checks. Usable by hand (as root):
# `bash scripts/ci-sshd.sh`, then `. /tmp/deltasync-ci/sshd.env`; `bash scripts/ci-sshd.sh stop`.
set -euo pipefail

CI_DIR=${DELTASYNC_CI_DIR:-/tmp/deltasync-ci}
ROOT=$CI_DIR/sshd
ENV_FILE=$CI_DIR/sshd.env
TEST_USER=${DELTASYNC_TEST_SFTP_USER:-dstest}
WAIT_SECONDS=${CI_SERVICES_WAIT_SECONDS:-30}

export DEBIAN_FRONTEND=noninteractive

log() { echo "ci-sshd: $*" >&2; }
die() {
  echo "ci-sshd: ERROR: $*" >&2
  [[ -f $ROOT/sshd.log ]] && tail -n 5 "$ROOT/sshd.log" >&2
  exit 1
}

free_port() {
  local port=$1
  # Something answers a connection there: taken (bash's /dev/tcp, no extra package needed).
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

sshd_answers() {
  [[ -f $ENV_FILE ]] || return 1
  local port
  port=$(sed -n 's/^DELTASYNC_TEST_SFTP_PORT=//p' "$ENV_FILE")
  [[ -n $port ]] && timeout 2 ssh-keyscan -t ed25519 -p "$port" 127.0.0.1 2>/dev/null | grep -q ssh-ed25519
}

stop_all() {
  [[ -f $ROOT/sshd.pid ]] && kill "$(cat "$ROOT/sshd.pid")" 2>/dev/null || true
  rm -rf "$ROOT" "$ENV_FILE"
}

if [[ ${1:-} == stop ]]; then
  stop_all
  exit 0
fi

if sshd_answers; then
  log "sshd already answers (port $(sed -n 's/^DELTASYNC_TEST_SFTP_PORT=//p' "$ENV_FILE"))"
  exit 0
fi

if ! command -v sshd >/dev/null && [[ ! -x /usr/sbin/sshd ]] || ! command -v ssh-keyscan >/dev/null; then
  [[ $(id -u) -eq 0 ]] || die "must run as root to install openssh-server"
  log "apt-get install openssh-server openssh-client"
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null ||
    die "apt-get install openssh-server failed"
fi

stop_all
mkdir -p "$ROOT" "$CI_DIR" /run/sshd
chmod 755 "$CI_DIR" "$ROOT"

if ! id "$TEST_USER" >/dev/null 2>&1; then
  log "creating user $TEST_USER"
  useradd --system --create-home --shell /bin/sh "$TEST_USER" || die "useradd $TEST_USER failed"
fi
# useradd leaves the account locked ('!'), which sshd refuses even for keys; '*' means "no
# password" without the lock.
usermod -p '*' "$TEST_USER"

ssh-keygen -q -t ed25519 -N '' -C deltasync-ci-host -f "$ROOT/host_ed25519" || die "ssh-keygen failed"
ssh-keygen -q -t ed25519 -N '' -C deltasync-ci-user -f "$ROOT/user_ed25519" || die "ssh-keygen failed"
cp "$ROOT/user_ed25519.pub" "$ROOT/authorized_keys"
chmod 644 "$ROOT/authorized_keys"
mkdir -p "$ROOT/data"
chown "$TEST_USER" "$ROOT/data"

PORT=$(free_port 12222)
cat >"$ROOT/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $PORT
HostKey $ROOT/host_ed25519
PidFile $ROOT/sshd.pid
AuthorizedKeysFile $ROOT/authorized_keys
AllowUsers $TEST_USER
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
EOF

log "sshd on 127.0.0.1:$PORT"
/usr/sbin/sshd -f "$ROOT/sshd_config" -E "$ROOT/sshd.log" || die "sshd did not start"

deadline=$((SECONDS + WAIT_SECONDS))
until ssh-keyscan -t ed25519 -p "$PORT" 127.0.0.1 2>/dev/null | grep ssh-ed25519 >"$ROOT/known_hosts"; do
  ((SECONDS < deadline)) || die "sshd never answered on port $PORT"
  sleep 0.2
done
FINGERPRINT=$(ssh-keygen -l -E sha256 -f "$ROOT/host_ed25519.pub" | awk '{print $2}')

cat >"$ENV_FILE.tmp" <<EOF
DELTASYNC_TEST_SFTP_HOST=127.0.0.1
DELTASYNC_TEST_SFTP_PORT=$PORT
DELTASYNC_TEST_SFTP_USER=$TEST_USER
DELTASYNC_TEST_SFTP_KEY=$ROOT/user_ed25519
DELTASYNC_TEST_SFTP_KNOWN_HOSTS=$ROOT/known_hosts
DELTASYNC_TEST_SFTP_DIR=$ROOT/data
DELTASYNC_TEST_SFTP_FINGERPRINT=$FINGERPRINT
EOF
mv "$ENV_FILE.tmp" "$ENV_FILE"
log "ready: sftp://$TEST_USER@127.0.0.1:$PORT$ROOT/data (facts in $ENV_FILE)"
