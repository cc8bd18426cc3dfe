#!/usr/bin/env bash
# Throwaway PostgreSQL clusters for tests: one per test that needs one, on a free loopback port,
# fsync off, TLS on with a CA made on the spot. Used by the Rust and the Node test harnesses.
#
#   pg-cluster.sh start DIR     create (first time) and start; prints the URL on stdout
#   pg-cluster.sh stop DIR      stop (fast), keep the data
#   pg-cluster.sh restart DIR   start again on the same port
#   pg-cluster.sh destroy DIR   stop at once and delete DIR
# DIR/ca.pem is the CA that signed the server certificate (SANs 127.0.0.1 and localhost).
set -euo pipefail
cmd=${1:?usage: pg-cluster.sh start|stop|restart|destroy DIR}
dir=${2:?usage: pg-cluster.sh start|stop|restart|destroy DIR}

bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
  else
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
  fi
}
BIN=$(bindir)
[ -x "$BIN/initdb" ] || { echo "pg-cluster.sh: PostgreSQL server binaries not found" >&2; exit 1; }

# initdb refuses to run as root: run the server as the unprivileged postgres user when root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

make_certs() {
  local d=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=zedi-test-ca" \
    -keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/san.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/san.ext" -out "$d/server.crt" >/dev/null 2>&1
  chmod 600 "$d/server.key"
}

start() {
  local port
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    mkdir -p "$dir"
    chmod 755 "$dir"
    make_certs "$dir"
    if [ "$(id -u)" = 0 ]; then
      chown -R postgres "$dir"
      runuser -u postgres -- test -x "$dir" ||
        { echo "pg-cluster.sh: $dir is not reachable by the postgres user (check its parents' modes)" >&2; exit 1; }
    fi
    # Local socket: trust (to set the password); TCP: a real password check (scram).
    as_pg "$BIN/initdb" -D "$dir/data" --auth-local=trust --auth-host=scram-sha-256 -U postgres \
      --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    free_port >"$dir/port"
  fi
  port=$(cat "$dir/port")
  as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start -o \
    "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
     -c synchronous_commit=on -c max_connections=200 -c ssl=on \
     -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key" >/dev/null
  if [ ! -f "$dir/password-set" ]; then
    as_pg "$BIN/psql" -h "$dir" -p "$port" -U postgres -d postgres -qtA \
      -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
    touch "$dir/password-set"
  fi
  echo "postgres://postgres:postgres@127.0.0.1:$port/postgres"
}

case "$cmd" in
  start | restart) start ;;
  stop) as_pg "$BIN/pg_ctl" -D "$dir/data" -w -t 30 stop -m fast >/dev/null ;;
  destroy)
    as_pg "$BIN/pg_ctl" -D "$dir/data" -w -t 30 stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *) echo "pg-cluster.sh: unknown command $cmd" >&2; exit 2 ;;
esac
