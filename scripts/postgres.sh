#!/usr/bin/env bash
# A PostgreSQL of the project's own, for tests and benchmarks: installs
# Debian's package when initdb is missing, makes a cluster in a temporary
# directory (as the postgres user when run as root: initdb refuses root),
# starts it on a free loopback port and prints its URL.
#   scripts/postgres.sh start DIR     -> prints postgres://lh@127.0.0.1:PORT/postgres
#   scripts/postgres.sh stop DIR      (immediate: like a crash of the database)
#   scripts/postgres.sh restart DIR   (the same data and port again)
#   scripts/postgres.sh run CMD...    -> CMD with LH_TEST_POSTGRES_URL set; stopped and removed after
# LH_PG_FSYNC=off turns fsync off (tests only: PostgreSQL itself is never killed there).
# TLS is on (ssl=on; LH_PG_TLS=off for none) with a CA of its own made by openssl: DIR/tls/ca.crt
# verifies the server's certificate (127.0.0.1 and localhost), for
# ?sslmode=verify-full&sslrootcert=DIR/tls/ca.crt; `run` exports it as
# LH_TEST_POSTGRES_CA. openssl is installed when missing; if it cannot be, PostgreSQL starts without TLS and says so (the TLS tests then print SKIPPED).
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL would inherit every descriptor this script got beyond 0-2 (a
# caller's pipe among them) and hold it open for its whole life: close them.
for fd in $(ls /proc/$$/fd 2>/dev/null); do
  if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
done

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A CA and a server certificate for 127.0.0.1 and localhost, readable by
# the postgres user (PostgreSQL refuses a key others can read).
make_tls() {
  local t=$1
  if ! command -v openssl >/dev/null 2>&1; then
    echo "== installing openssl (Debian's), for PostgreSQL's TLS certificates" >&2
    scripts/apt-install.sh openssl >&2 || return 1
  fi
  command -v openssl >/dev/null 2>&1 || return 1
  mkdir -p "$t"
  (
    cd "$t"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj "/CN=lh test PostgreSQL CA" -keyout ca.key -out ca.crt
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=localhost" -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile server.ext -out server.crt
  ) >"$t/openssl.log" 2>&1 || return 1
  chmod 600 "$t/server.key" "$t/ca.key"
  chmod 644 "$t/ca.crt" "$t/server.crt"
  [ "$(id -u)" = 0 ] && chown -R postgres "$t"
  return 0
}

start() {
  local dir=$1
  local bin
  bin=$(pg_bin)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "== installing PostgreSQL (Debian's postgresql)" >&2
    scripts/apt-install.sh postgresql
    bin=$(pg_bin)
  fi
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "postgres.sh: PostgreSQL is not installed and could not be (apt-get install postgresql)" >&2
    return 1
  fi
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_postgres "$bin/initdb" -D "$dir/data" -U lh -A trust -E UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    return 1
  }
  local tls=""
  if [ "${LH_PG_TLS:-on}" = off ]; then
    : >"$dir/tls-options"
  elif make_tls "$dir/tls"; then
    tls="-c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key"
    echo "$tls" >"$dir/tls-options"
  else
    echo "postgres.sh: openssl is missing or failed: PostgreSQL starts without TLS" >&2
    : >"$dir/tls-options"
  fi
  local port tries=0
  while true; do
    port=$(free_port)
    if as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 -o \
      "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c fsync=${LH_PG_FSYNC:-on} -c synchronous_commit=on $tls" \
      start >/dev/null 2>&1; then
      break
    fi
    tries=$((tries + 1))
    if [ $tries -ge 5 ]; then
      tail -20 "$dir/postgres.log" >&2
      return 1
    fi
  done
  echo "$port" >"$dir/port"
  echo "postgres://lh@127.0.0.1:$port/postgres"
}

stop() {
  local dir=$1
  local bin
  bin=$(pg_bin)
  [ -d "$dir/data" ] && as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
}

restart() {
  local dir=$1
  local bin port
  bin=$(pg_bin)
  port=$(cat "$dir/port")
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c fsync=${LH_PG_FSYNC:-on} -c synchronous_commit=on $(cat "$dir/tls-options" 2>/dev/null)" \
    start >/dev/null
  echo "postgres://lh@127.0.0.1:$port/postgres"
}

case "${1:-}" in
  start) start "$2" ;;
  stop) stop "$2" ;;
  restart) restart "$2" ;;
  run)
    shift
    dir=$(mktemp -d /tmp/lh-pg.XXXXXX)
    chmod 755 "$dir"
    trap 'stop "$dir"; rm -rf "$dir"' EXIT
    url=$(start "$dir")
    echo "== PostgreSQL for the tests: $url ($(pg_bin | cut -d/ -f4-5))" >&2
    ca=""
    [ -s "$dir/tls-options" ] && ca="$dir/tls/ca.crt"
    LH_TEST_POSTGRES_URL="$url" LH_TEST_POSTGRES_CA="$ca" "$@"
    ;;
  *)
    echo "usage: scripts/postgres.sh start DIR | stop DIR | restart DIR | run CMD..." >&2
    exit 64
    ;;
esac
