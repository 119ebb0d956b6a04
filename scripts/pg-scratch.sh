#!/usr/bin/env bash
# pg-scratch.sh — private throwaway PostgreSQL server for tests that need to
# stop/restart the database without touching the shared server.
#
#   pg-scratch.sh start DIR PORT   initdb DIR if needed, start on 127.0.0.1:PORT
#   pg-scratch.sh stop DIR         fast shutdown (no-op if not running)
#   pg-scratch.sh destroy DIR      stop if running, then rm -rf DIR
#   pg-scratch.sh replica DIR PORT PRIMARY_PORT  streaming replica of PRIMARY_PORT, on PORT
#   pg-scratch.sh promote DIR      promote a replica to primary
#
# Superuser is `postgres`, auth is trust, the unix socket lives in DIR.
# Silent on success; loud (with the server log) on failure.
# Env: PG_BINDIR overrides the binary directory (default: highest
# /usr/lib/postgresql/*/bin; /usr/local/bin/pg_ctl is a wrapper, so avoid PATH).
set -euo pipefail

die() { echo "pg-scratch: ERROR: $*" >&2; exit 1; }
usage() { die "usage: $0 start DIR PORT | replica DIR PORT PRIMARY_PORT | promote DIR | stop DIR | destroy DIR"; }

[ $# -ge 2 ] || usage
CMD="$1"
DIR="$(realpath -m -- "$2")"   # absolute: used as socket dir and after cd /
[ "$DIR" != / ] || die "refusing to use / as DIR"
LOG="$DIR/server.log"

BINDIR="${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}"
[ -x "$BINDIR/pg_ctl" ] && [ -x "$BINDIR/initdb" ] ||
  die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (run scripts/ensure-postgres.sh)"

# initdb/postgres refuse to run as root: run them as the postgres OS user.
# cd / so the server user never trips over an unreadable cwd (e.g. /root).
cd /
AS=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user"
  AS=(runuser -u postgres --)
fi
pgctl() { "${AS[@]}" "$BINDIR/pg_ctl" -D "$DIR" "$@"; }
running() { [ -f "$DIR/PG_VERSION" ] && pgctl status >/dev/null 2>&1; }
show_log() { [ -f "$LOG" ] && { echo "---- $LOG ----" >&2; tail -n 40 "$LOG" >&2; }; return 0; }

case "$CMD" in
start)
  [ $# -eq 3 ] || usage
  PORT="$3"
  [[ "$PORT" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$PORT'"

  if [ ! -f "$DIR/PG_VERSION" ]; then
    mkdir -p "$DIR"
    if [ "${#AS[@]}" -ne 0 ]; then
      chown postgres: "$DIR"
      # Test temp dirs (e.g. Rust tempfile: /tmp/.tmpXXXX, mode 700, owned by
      # root) are not traversable by postgres: add the search bit (not read)
      # to such parents, but only below /tmp or $TMPDIR.
      P="$(dirname "$DIR")"
      while [ "$P" != / ]; do
        case "$P/" in
          /tmp/?*|"${TMPDIR:-/tmp}"/?*) runuser -u postgres -- test -x "$P" || chmod o+x "$P" ;;
        esac
        P="$(dirname "$P")"
      done
    fi
    chmod 700 "$DIR"
    "${AS[@]}" test -w "$DIR" ||
      die "$DIR is not writable by the server user (are its parent dirs traversable by postgres?)"
    # --no-sync and C locale keep initdb fast (~1 s); the data is disposable.
    OUT="$("${AS[@]}" "$BINDIR/initdb" -D "$DIR" -U postgres --auth=trust \
      --no-sync --no-instructions -E UTF8 --locale=C 2>&1)" || { echo "$OUT" >&2; die "initdb $DIR failed"; }
    # Port is given at start time (-p), so a restart may use another port.
    cat >>"$DIR/postgresql.conf" <<EOF

# --- pg-scratch.sh: throwaway test server ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 50
EOF
  fi

  if running; then
    # Idempotent start: fine if it already answers on the requested port.
    "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" ||
      die "server in $DIR is running but does not answer on 127.0.0.1:$PORT"
    exit 0
  fi

  # -w waits until the server accepts connections (or fails).
  OUT="$(pgctl -l "$LOG" -o "-p $PORT" -w -t 30 -s start 2>&1)" ||
    { echo "$OUT" >&2; show_log; die "could not start scratch server in $DIR on port $PORT"; }
  "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 10 ||
    { show_log; die "scratch server in $DIR started but does not answer on 127.0.0.1:$PORT"; }
  ;;

replica)
  # A streaming replica of the scratch server on PRIMARY_PORT, started on PORT.
  [ $# -eq 4 ] || usage
  PORT="$3"; PRIMARY_PORT="$4"
  [ ! -e "$DIR/PG_VERSION" ] || die "$DIR already holds a cluster"
  mkdir -p "$DIR"
  [ "${#AS[@]}" -eq 0 ] || chown postgres: "$DIR"
  chmod 700 "$DIR"
  OUT="$("${AS[@]}" "$BINDIR/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres \
    -D "$DIR" -R -X stream --checkpoint=fast --no-sync 2>&1)" || { echo "$OUT" >&2; die "pg_basebackup from port $PRIMARY_PORT failed"; }
  # The copied configuration names the primary's socket directory; later lines win.
  printf "unix_socket_directories = '%s'\nhot_standby = on\n" "$DIR" | "${AS[@]}" tee -a "$DIR/postgresql.conf" >/dev/null
  OUT="$(pgctl -l "$LOG" -o "-p $PORT" -w -t 30 -s start 2>&1)" ||
    { echo "$OUT" >&2; show_log; die "could not start replica in $DIR on port $PORT"; }
  ;;

promote)
  [ $# -eq 2 ] || usage
  OUT="$(pgctl -w -t 30 promote 2>&1)" || { echo "$OUT" >&2; show_log; die "could not promote $DIR"; }
  ;;

stop)
  [ $# -eq 2 ] || usage
  running || exit 0
  OUT="$(pgctl -m fast -w -t 60 -s stop 2>&1)" ||
    { echo "$OUT" >&2; show_log; die "could not stop scratch server in $DIR"; }
  ;;

destroy)
  [ $# -eq 2 ] || usage
  [ -e "$DIR" ] || exit 0
  # Safety net against a mistyped DIR: only delete empty dirs or clusters.
  if [ ! -f "$DIR/PG_VERSION" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    die "$DIR is not a PostgreSQL data directory; refusing to delete it"
  fi
  if running; then
    pgctl -m fast -w -t 60 -s stop >/dev/null 2>&1 ||
      pgctl -m immediate -w -t 30 -s stop >/dev/null 2>&1 ||
      { show_log; die "could not stop scratch server in $DIR"; }
  fi
  rm -rf -- "$DIR"
  ;;

*) usage ;;
esac
