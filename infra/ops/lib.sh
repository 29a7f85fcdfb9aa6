# shellcheck shell=bash
# What the scripts in infra/ops share: messages, finding PostgreSQL's
# binaries, running server commands as the cluster's owner, private
# throw-away clusters (the restore drill and the restore benchmark), a
# pgBackRest configuration for an S3 or directory repository, and a TLS
# front for a plain-HTTP S3 service (pgBackRest speaks S3 over TLS only;
# the dev and test Garage listens on plain HTTP).
#
# Sourced, never run: the caller sets OPS_NAME and `set -euo pipefail`.

OPS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OPS_REPO="$(cd "$OPS_DIR/../.." && pwd)"

say() { printf '%s: %s\n' "$OPS_NAME" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$OPS_NAME" "$*" >&2
  exit 1
}

# The dev services' settings (LECTERN_S3_*, LECTERN_PG_BIN) when the caller
# has not exported them: this checkout's .lectern/env, if any.
ops_load_dev_env() {
  if [ -z "${LECTERN_S3_ENDPOINT:-}" ] && [ -f "$OPS_REPO/.lectern/env" ]; then
    set -a
    # shellcheck disable=SC1091
    . "$OPS_REPO/.lectern/env"
    set +a
  fi
}

ops_need() { # COMMAND WHAT-INSTALLS-IT
  command -v "$1" >/dev/null 2>&1 || die "$1 not found; $2"
}

# PG_BIN: LECTERN_PG_BIN (written by infra/dev/services), else the newest
# server binaries Debian installed.
ops_find_pg_bin() {
  PG_BIN="${LECTERN_PG_BIN:-}"
  if [ -z "$PG_BIN" ]; then
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
  fi
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] ||
    die "PostgreSQL server binaries not found (LECTERN_PG_BIN); run infra/dev/setup"
}

OPS_IS_ROOT=0
[ "$(id -u)" -eq 0 ] && OPS_IS_ROOT=1

# PostgreSQL and pgBackRest refuse to run as root: as root, run them as the
# `postgres` system user (created by Debian's postgresql package).
as_pg() {
  if [ "$OPS_IS_ROOT" -eq 1 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Hand a path we created to the user the cluster runs as.
give_pg() {
  if [ "$OPS_IS_ROOT" -eq 1 ]; then chown -R postgres:postgres "$@"; fi
}

# A loopback TCP port nothing listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Seconds since the epoch with microseconds, for durations.
now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# wait_for SECONDS COMMAND... — poll every 0.2 s; bounded.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# --- private clusters --------------------------------------------------------

# pg_new_cluster DATA PASSWORD — initdb: scram-sha-256 over TCP, peer on the
# private socket (so pgBackRest, running as the cluster's owner, connects
# without a password).
pg_new_cluster() {
  local data="$1" password="$2" pwfile
  pwfile="$(dirname "$data")/initdb-password"
  (umask 077 && printf '%s\n' "$password" >"$pwfile")
  give_pg "$pwfile"
  as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth-host=scram-sha-256 --auth-local=peer \
    --pwfile="$pwfile" -E UTF8 --locale=C >"$data.initdb.log" 2>&1 ||
    { rm -f "$pwfile"; tail -n 20 "$data.initdb.log" >&2; die "initdb $data failed"; }
  rm -f "$pwfile"
}

# pg_start DATA PORT SOCKDIR [LOG] — start and wait until it accepts
# connections (a cluster in recovery accepts them as a hot standby). LOG
# (default DATA.log) must be writable by the cluster's owner.
pg_start() {
  local data="$1" port="$2" sock="$3" log="${4:-$1.log}"
  as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$log" -w -t 300 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $sock -c unix_socket_permissions=0700" \
    start >/dev/null 2>&1 ||
    { tail -n 30 "$log" >&2; die "PostgreSQL in $data did not start"; }
}

pg_stop() { # DATA [MODE]
  [ -f "$1/postmaster.pid" ] || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$1" -m "${2:-fast}" -w -t 120 stop >/dev/null 2>&1 || true
}

# psql_at PORT SOCKDIR DB SQL — one value, as the postgres role over the socket.
psql_at() {
  as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$2" -p "$1" -d "$3" -tAc "$4"
}

# --- TLS front for a plain-HTTP S3 service ----------------------------------

# tls_front_start DIR UPSTREAM — nginx on a free loopback port with a
# self-signed certificate for `localhost`, passing every request (and its
# Host header, which SigV4 signs) to UPSTREAM (host:port). Sets TLS_PORT,
# TLS_CA and TLS_PID_FILE.
tls_front_start() {
  local dir="$1" upstream="$2"
  ops_need nginx "run infra/dev/setup (test profile)"
  ops_need openssl "run infra/dev/setup (test profile)"
  mkdir -p "$dir/tmp"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$dir/key.pem" -out "$dir/cert.pem" \
    >/dev/null 2>&1 || die "openssl could not make the TLS front's certificate"
  TLS_PORT="$(free_port)"
  TLS_CA="$dir/cert.pem"
  TLS_PID_FILE="$dir/nginx.pid"
  cat >"$dir/nginx.conf" <<EOF
pid $dir/nginx.pid;
error_log $dir/error.log;
worker_processes 1;
events {}
http {
  access_log off;
  client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp;
  server {
    listen 127.0.0.1:$TLS_PORT ssl;
    ssl_certificate $dir/cert.pem;
    ssl_certificate_key $dir/key.pem;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    location / {
      proxy_pass http://$upstream;
      proxy_set_header Host \$http_host;
      proxy_http_version 1.1;
    }
  }
}
EOF
  # As root nginx would switch its workers to `nobody`; they need nothing
  # but the sockets, and the pid file names the master for tls_front_stop.
  nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon on;' 2>"$dir/start.log" ||
    { cat "$dir/start.log" "$dir/error.log" >&2 2>/dev/null; die "nginx (TLS front) did not start"; }
  wait_for 10 test -s "$TLS_PID_FILE" || die "nginx (TLS front) wrote no pid file"
}

tls_front_stop() {
  [ -n "${TLS_PID_FILE:-}" ] && [ -s "$TLS_PID_FILE" ] || return 0
  kill -QUIT "$(cat "$TLS_PID_FILE")" 2>/dev/null || true
}

# --- pgBackRest ----------------------------------------------------------------

# pgbr_write_conf FILE STANZA DATA PORT SOCKDIR STATE REPO_KIND REPO_WHERE
# REPO_KIND is `s3` (REPO_WHERE: the path inside the bucket; PGBR_S3_HOST,
# PGBR_S3_PORT, PGBR_S3_CA (optional), PGBR_S3_BUCKET, PGBR_S3_REGION,
# PGBR_S3_KEY, PGBR_S3_SECRET and PGBR_S3_PATH_STYLE=true|false name the
# service, reached over TLS) or `dir` (REPO_WHERE: a directory). STATE is a
# directory for pgBackRest's log, lock and spool files, or empty for its
# defaults (/var/log/pgbackrest, /tmp/pgbackrest, /var/spool/pgbackrest).
# Retention is the requirements' (see infra/ops/README.md): full backups
# kept 182 days, WAL (point-in-time recovery) for the newest 30 full or
# differential backups, i.e. 30 days of daily backups.
pgbr_write_conf() {
  local file="$1" stanza="$2" data="$3" port="$4" sock="$5" state="$6" kind="$7" where="$8"
  if [ -n "$state" ]; then
    mkdir -p "$state/log" "$state/lock" "$state/spool"
    give_pg "$state"
  fi
  mkdir -p "$(dirname "$file")"
  (
    umask 077
    {
      echo "# Written by infra/ops/$OPS_NAME; rewritten on every run."
      echo "[global]"
      case "$kind" in
        s3)
          echo "repo1-type=s3"
          echo "repo1-s3-endpoint=$PGBR_S3_HOST"
          echo "repo1-storage-port=${PGBR_S3_PORT:-443}"
          [ -z "${PGBR_S3_CA:-}" ] || echo "repo1-storage-ca-file=$PGBR_S3_CA"
          echo "repo1-s3-bucket=$PGBR_S3_BUCKET"
          echo "repo1-s3-region=${PGBR_S3_REGION:-us-east-1}"
          echo "repo1-s3-key=$PGBR_S3_KEY"
          echo "repo1-s3-key-secret=$PGBR_S3_SECRET"
          if [ "${PGBR_S3_PATH_STYLE:-false}" = true ]; then echo "repo1-s3-uri-style=path"; fi
          echo "repo1-path=$where"
          ;;
        dir) echo "repo1-path=$where" ;;
        *) die "unknown repository kind '$kind' (s3 or dir)" ;;
      esac
      echo "repo1-retention-full-type=time"
      echo "repo1-retention-full=${PGBR_RETENTION_FULL_DAYS:-182}"
      echo "repo1-retention-diff=${PGBR_RETENTION_DIFF:-30}"
      echo "repo1-retention-archive-type=diff"
      echo "repo1-retention-archive=${PGBR_RETENTION_DIFF:-30}"
      # lz4: restores are bound by decompression on small machines; it is
      # several times faster to decompress than gz at a modest size cost.
      echo "compress-type=lz4"
      echo "process-max=${PGBR_PROCESS_MAX:-2}"
      echo "start-fast=y"
      echo "log-level-console=warn"
      echo "log-level-file=info"
      if [ -n "$state" ]; then
        echo "log-path=$state/log"
        echo "lock-path=$state/lock"
        echo "spool-path=$state/spool"
      fi
      echo
      echo "[$stanza]"
      echo "pg1-path=$data"
      echo "pg1-port=$port"
      echo "pg1-socket-path=$sock"
      echo "pg1-user=postgres"
    } >"$file.tmp"
    mv "$file.tmp" "$file"
  )
  give_pg "$file"
}

# pgbr CONF ARGS... — pgBackRest as the cluster's owner.
pgbr() {
  local conf="$1"
  shift
  as_pg pgbackrest --config="$conf" "$@"
}

# --- the production settings (infra/ops/pgbackrest-setup, backup, restore) -----

# ops_load_backup_env FILE — LECTERN_BACKUP_* from the environment and FILE
# (when it exists), defaults, checks; sets BACKUP_REPO_KIND,
# BACKUP_REPO_WHERE and the PGBR_S3_* pgbr_write_conf reads.
ops_load_backup_env() {
  if [ -f "$1" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$1"
    set +a
  fi
  : "${LECTERN_BACKUP_STANZA:=lectern}"
  : "${LECTERN_BACKUP_CONF:=/etc/pgbackrest/pgbackrest.conf}"
  : "${LECTERN_BACKUP_PGPORT:=5432}"
  : "${LECTERN_BACKUP_PGSOCKET:=/var/run/postgresql}"
  : "${LECTERN_BACKUP_REPO:=dir}"
  [ -n "${LECTERN_BACKUP_PGDATA:-}" ] || die "LECTERN_BACKUP_PGDATA is not set (the cluster's data directory; see --help)"
  BACKUP_REPO_KIND="$LECTERN_BACKUP_REPO"
  case "$BACKUP_REPO_KIND" in
    dir)
      BACKUP_REPO_WHERE="${LECTERN_BACKUP_DIR:-/var/lib/pgbackrest}"
      mkdir -p "$BACKUP_REPO_WHERE"
      give_pg "$BACKUP_REPO_WHERE"
      ;;
    s3)
      local v
      for v in LECTERN_BACKUP_S3_ENDPOINT LECTERN_BACKUP_S3_BUCKET LECTERN_BACKUP_S3_ACCESS_KEY_ID LECTERN_BACKUP_S3_SECRET_ACCESS_KEY; do
        [ -n "${!v:-}" ] || die "$v is required with LECTERN_BACKUP_REPO=s3"
      done
      [[ "$LECTERN_BACKUP_S3_ENDPOINT" == https://* ]] ||
        die "LECTERN_BACKUP_S3_ENDPOINT must be https://… (pgBackRest speaks S3 over TLS only)"
      PGBR_S3_HOST="${LECTERN_BACKUP_S3_ENDPOINT#https://}"
      PGBR_S3_HOST="${PGBR_S3_HOST%%/*}"
      PGBR_S3_PORT=443
      if [[ "$PGBR_S3_HOST" == *:* ]]; then
        PGBR_S3_PORT="${PGBR_S3_HOST##*:}"
        PGBR_S3_HOST="${PGBR_S3_HOST%:*}"
      fi
      PGBR_S3_CA="${LECTERN_BACKUP_S3_CA_FILE:-}"
      PGBR_S3_BUCKET="$LECTERN_BACKUP_S3_BUCKET"
      PGBR_S3_REGION="${LECTERN_BACKUP_S3_REGION:-us-east-1}"
      PGBR_S3_KEY="$LECTERN_BACKUP_S3_ACCESS_KEY_ID"
      PGBR_S3_SECRET="$LECTERN_BACKUP_S3_SECRET_ACCESS_KEY"
      PGBR_S3_PATH_STYLE="${LECTERN_BACKUP_S3_PATH_STYLE:-false}"
      BACKUP_REPO_WHERE="${LECTERN_BACKUP_S3_PATH:-/pgbackrest}"
      ;;
    *) die "LECTERN_BACKUP_REPO must be s3 or dir, not '$BACKUP_REPO_KIND'" ;;
  esac
}

# backup_status KIND — record a success for Prometheus' node_exporter
# textfile collector: lectern_backup_last_success_timestamp_seconds{kind}
# in LECTERN_BACKUP_TEXTFILE_DIR (Debian's node exporter reads
# /var/lib/prometheus/node-exporter), one file per kind, replaced atomically.
backup_status() {
  local dir="${LECTERN_BACKUP_TEXTFILE_DIR:-/var/lib/prometheus/node-exporter}" file
  [ -d "$dir" ] || { say "no $dir: success of $1 not recorded for Prometheus (LECTERN_BACKUP_TEXTFILE_DIR)"; return 0; }
  file="$dir/lectern_backup_$1.prom"
  {
    echo "# HELP lectern_backup_last_success_timestamp_seconds When a backup of this kind last succeeded (Unix time)."
    echo "# TYPE lectern_backup_last_success_timestamp_seconds gauge"
    echo "lectern_backup_last_success_timestamp_seconds{kind=\"$1\"} $(date +%s)"
  } >"$file.$$"
  chmod 644 "$file.$$"
  mv "$file.$$" "$file"
}

# `env` arguments that drop the scripts' own LECTERN_* variables (which are
# not Lectern settings: the binary refuses unknown LECTERN_* variables)
# before running `lectern`.
lectern_env_clean() {
  local var
  for var in $(compgen -e); do
    case "$var" in
      LECTERN_BIN | LECTERN_REPLICA_ARGS | LECTERN_BACKUP_*) printf -- '-u\n%s\n' "$var" ;;
    esac
  done
}
