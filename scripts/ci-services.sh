#!/usr/bin/env bash
# Makes sure the database servers the integration suites need are installed and answering on
# 127.0.0.1, the way test/helpers/databases.ts connects to them:
#   PostgreSQL  postgres://postgres@127.0.0.1:5432/postgres   (no password)
#   MariaDB     mysql://root@127.0.0.1:3306/test             (no password, LOAD DATA LOCAL on)
#
# Idempotent, for root on Debian 12. When both servers already answer as required it only checks
# (well under a second); otherwise it installs what is missing from Debian's packages, starts the
# servers without systemd (CI machines have none) and fixes authentication. Any failure ends the
# script with a one-line reason on stderr and a non-zero exit code.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
MYSQL_HOST=127.0.0.1
MYSQL_PORT=3306
# How long to wait for a server that is starting before giving up.
WAIT_SECONDS=${CI_SERVICES_WAIT_SECONDS:-60}

export DEBIAN_FRONTEND=noninteractive

log() { echo "ci-services: $*" >&2; }
die() {
  echo "ci-services: ERROR: $*" >&2
  exit 1
}

# Runs `apt-get update` at most once per run, and only when something has to be installed.
APT_UPDATED=0
apt_install() {
  [[ $(id -u) -eq 0 ]] || die "must run as root to install $*"
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

# wait_for DESCRIPTION COMMAND...: retries COMMAND every half second for WAIT_SECONDS.
wait_for() {
  local what=$1
  shift
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
  log "$what is up"
}

# ---------------------------------------------------------------- PostgreSQL

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
# -w: never prompt, so a server that wants a password fails here instead of hanging.
pg_sql() { psql -X -w -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atc "$1"; }
pg_ok() { pg_ready && [[ $(pg_sql 'select 1' 2>/dev/null) == 1 ]]; }

pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true; }

# Trusts TCP connections from 127.0.0.1 (CI only: nothing but this machine can reach it).
pg_trust_loopback() {
  local hba
  hba=$(pg_sql 'show hba_file' 2>/dev/null || true)
  [[ -n $hba ]] || hba="/etc/postgresql/$(pg_version)/main/pg_hba.conf"
  [[ -f $hba ]] || die "cannot find pg_hba.conf (looked for $hba)"
  if ! grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    log "adding 'host all all 127.0.0.1/32 trust' at the top of $hba"
    # First matching line wins in pg_hba.conf, so the rule must come before the defaults.
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  # A reload re-reads pg_hba.conf without dropping connections.
  pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main reload >/dev/null 2>&1 ||
    su postgres -c "psql -X -q -c 'select pg_reload_conf()'" >/dev/null ||
    die "could not reload PostgreSQL after editing $hba"
}

ensure_postgres() {
  if pg_ok; then
    return 0
  fi
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql
  fi
  if [[ -z $(pg_version) ]]; then
    local v
    v=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    log "creating cluster $v/main"
    pg_createcluster "$v" main >/dev/null || die "pg_createcluster $v main failed"
  fi
  local version
  version=$(pg_version)
  if ! pg_ready; then
    log "starting PostgreSQL $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
      die "could not start PostgreSQL $version/main (see /var/log/postgresql/postgresql-$version-main.log)"
    wait_for "PostgreSQL on $PG_HOST:$PG_PORT" pg_ready ||
      die "PostgreSQL did not answer on $PG_HOST:$PG_PORT within ${WAIT_SECONDS}s (is it listening on another port? see pg_lsclusters)"
  fi
  if ! pg_ok; then
    pg_trust_loopback
    wait_for "PostgreSQL login as postgres" pg_ok ||
      die "role postgres still cannot log in over TCP on $PG_HOST:$PG_PORT without a password"
  fi
}

# ---------------------------------------------------------------- MariaDB

# What the tests do: TCP, root, empty password, no option files that could add a password.
my_tcp() { mariadb --no-defaults --protocol=tcp -h "$MYSQL_HOST" -P "$MYSQL_PORT" -u root -N -B -e "$1"; }
# Administration as root over the unix socket (Debian's root@localhost uses unix_socket auth).
my_socket() { mariadb -u root -N -B -e "$1"; }
# Up means the TCP port accepts connections: mariadbd opens it only once it can serve queries, and
# a login check would mistake "root may not connect yet" for "server down".
my_up() { timeout 2 bash -c "exec 3<>/dev/tcp/$MYSQL_HOST/$MYSQL_PORT"; }
# Answers as root over TCP, has database `test`, and allows LOAD DATA LOCAL INFILE.
my_ok() {
  [[ $(my_tcp "select concat(@@global.local_infile + 0, ':', (select count(*) from information_schema.schemata where schema_name = 'test'))" 2>/dev/null) == 1:1 ]]
}

ensure_mariadb() {
  if my_ok; then
    return 0
  fi
  if [[ ! -x /usr/sbin/mariadbd ]]; then
    apt_install mariadb-server
  fi
  if ! my_up >/dev/null 2>&1; then
    log "starting MariaDB"
    # /run is a tmpfs: the socket directory may be gone after a reboot or in a fresh container.
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    # mariadbd refuses to run as root; --user makes it drop to mysql whatever my.cnf says.
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql ||
      die "start-stop-daemon could not start /usr/sbin/mariadbd"
    wait_for "MariaDB on $MYSQL_HOST:$MYSQL_PORT" my_up ||
      die "MariaDB did not answer on $MYSQL_HOST:$MYSQL_PORT within ${WAIT_SECONDS}s (see /var/log/mysql/error.log)"
  fi
  if ! my_ok; then
    log "granting root@127.0.0.1 and root@localhost password-less access, creating database test, enabling local_infile"
    # root@localhost keeps unix_socket as an alternative so socket administration still works;
    # root@127.0.0.1 is what TCP clients match when the server runs with skip-name-resolve.
    my_socket "
      ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
      CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
      ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '';
      GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
      FLUSH PRIVILEGES;
      CREATE DATABASE IF NOT EXISTS test;
      SET GLOBAL local_infile = 1;" ||
      die "could not set up root over the unix socket (mariadb -u root); fix root's authentication by hand"
    my_ok || die "MariaDB still refuses root@$MYSQL_HOST:$MYSQL_PORT with an empty password, or local_infile is off"
  fi
}

ensure_postgres
ensure_mariadb
log "PostgreSQL $PG_HOST:$PG_PORT and MariaDB $MYSQL_HOST:$MYSQL_PORT ready"
