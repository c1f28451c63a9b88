#!/usr/bin/env bash
# Start a throw-away PostgreSQL server for the multi-worker tests and print its URL on stdout.
#   bash scripts/start_postgres.sh          # start (or reuse) -> postgresql+psycopg://postgres@127.0.0.1:PORT/borealis_test
#   bash scripts/start_postgres.sh --stop   # stop it and delete its data
# Installs Debian's postgresql if no server binaries are found (needs root and apt). The cluster
# lives in $BOREALIS_PG_DIR (default /tmp/borealis-pg-$UID), listens on 127.0.0.1 only, on a free
# port, with trust authentication: a test fixture, never a real database. Messages go to stderr.
set -euo pipefail
DIR=${BOREALIS_PG_DIR:-/tmp/borealis-pg-$(id -u)}
DB=borealis_test
say() { echo "start_postgres: $*" >&2; }

find_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [[ -x $d/initdb && -x $d/pg_ctl ]] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

BIN=$(find_bin || true)
if [[ ${1:-} == --stop ]]; then
  if [[ -n $BIN && -f $DIR/data/PG_VERSION ]]; then
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >&2 || true
    else "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >&2 || true; fi
  fi
  rm -rf "$DIR"
  exit 0
fi

if [[ -z $BIN ]]; then
  if [[ $(id -u) != 0 ]]; then say "no PostgreSQL binaries and not root: cannot install"; exit 1; fi
  say "installing Debian's postgresql (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2 || {
    say "apt-get install postgresql failed"; exit 1; }
  BIN=$(find_bin) || { say "postgresql installed but initdb/pg_ctl not found"; exit 1; }
fi

as_pg() {  # the server refuses to run as root
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [[ -f $DIR/port ]] && as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  echo "postgresql+psycopg://postgres@127.0.0.1:$(cat "$DIR/port")/$DB"
  exit 0
fi
rm -rf "$DIR"
mkdir -p "$DIR"
[[ $(id -u) == 0 ]] && chown postgres "$DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 >/dev/null
as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=100 -c fsync=off" start >/dev/null
as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB" 2>/dev/null || \
  as_pg psql -h 127.0.0.1 -p "$PORT" -U postgres -c "CREATE DATABASE $DB" >/dev/null
echo "$PORT" > "$DIR/port"
say "server on 127.0.0.1:$PORT (data in $DIR; stop with: bash scripts/start_postgres.sh --stop)"
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/$DB"
