#!/usr/bin/env bash
# ensure-postgres.sh — make sure a PostgreSQL server answers at $PGHOST:$PGPORT.
#
# Idempotent. Fast path: the server already answers -> exit 0.
# Slow path (local hosts only, Debian): install packages if missing, pick (or
# create) the cluster configured for $PGPORT, make it listen on localhost with
# trust auth for local/127.0.0.1/::1, start it and wait up to 30 s.
# Never touches a server that is already running.
#
# Env: PGHOST (default 127.0.0.1), PGPORT (default 5432), PGUSER (default postgres).
set -euo pipefail

export PGHOST="${PGHOST:-127.0.0.1}"
export PGPORT="${PGPORT:-5432}"
export PGUSER="${PGUSER:-postgres}"

say() { echo "ensure-postgres: $*" >&2; }
die() { echo "ensure-postgres: ERROR: $*" >&2; exit 1; }

# Root can do everything itself; otherwise escalate with sudo when available.
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# apt may be held by another apt/dpkg run in the background: wait for the locks
# instead of failing immediately.
apt_install() {
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q update ||
    die "apt-get update failed"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q install -y "$@" ||
    die "apt-get install $* failed"
}

answers() { pg_isready -q -h "$PGHOST" -p "$PGPORT" >/dev/null 2>&1; }

# Beyond "accepting connections", the tests need to log in as $PGUSER; only
# warn (the server itself is up, which is what this script guarantees).
check_login() {
  psql -X -q -w -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -Atc 'select 1' >/dev/null 2>&1 ||
    say "WARNING: server at $PGHOST:$PGPORT is up but 'psql -U $PGUSER -c \"select 1\"' fails (role/auth?)"
}

# 1. Client tools (psql, pg_isready) are needed for everything below.
if ! command -v psql >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; then
  say "installing postgresql-client"
  apt_install postgresql-client
fi

# 2. Fast path.
if answers; then check_login; exit 0; fi

say "no PostgreSQL answering at $PGHOST:$PGPORT; trying to start one"
case "$PGHOST" in
  127.0.0.1|localhost|::1|/*) ;;
  *) die "PGHOST=$PGHOST is not local; cannot start a server there" ;;
esac

# 3. Server packages (the Debian postinst also creates a 'main' cluster).
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_lsclusters >/dev/null 2>&1; then
  say "installing postgresql server packages"
  apt_install postgresql postgresql-client
fi

fail_with_log() {
  local log="/var/log/postgresql/postgresql-$VER-$NAME.log"
  if $SUDO test -r "$log"; then
    echo "---- last lines of $log ----" >&2
    $SUDO tail -n 30 "$log" >&2 || true
  fi
  die "$1"
}

# 4. Find the cluster configured for $PGPORT (columns: ver name port status ...).
read -r VER NAME STATUS < <(pg_lsclusters -h 2>/dev/null | awk -v p="$PGPORT" '$3==p {print $1, $2, $4; exit}') || true
if [ -z "${VER:-}" ]; then
  VER="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
  # Reuse the conventional name 'main' unless it is taken (on another port).
  NAME=main
  [ -d "/etc/postgresql/$VER/main" ] && NAME="promgres$PGPORT"
  say "creating cluster $VER/$NAME on port $PGPORT (trust auth)"
  $SUDO pg_createcluster "$VER" "$NAME" -p "$PGPORT" -- --auth=trust >/dev/null ||
    die "pg_createcluster $VER $NAME failed"
  STATUS=down
fi
say "using cluster $VER/$NAME (status: $STATUS)"

# 5. Configuration: only when the cluster is down, never reconfigure a live one.
if [[ "$STATUS" == down* ]]; then
  # listen_addresses: keep it if it already covers 127.0.0.1 (unset => localhost).
  LISTEN="$(pg_conftool -s "$VER" "$NAME" show listen_addresses 2>/dev/null || echo localhost)"
  case "$LISTEN" in
    *'*'*|*0.0.0.0*|*127.0.0.1*|*localhost*) ;;
    *) say "setting listen_addresses = 'localhost'"
       $SUDO pg_conftool "$VER" "$NAME" set listen_addresses localhost ;;
  esac

  # pg_hba.conf: first match wins, so trust rules must come first. Prepend
  # them unless the first three effective rules already are exactly these.
  HBA="$(pg_conftool -s "$VER" "$NAME" show hba_file 2>/dev/null || echo "/etc/postgresql/$VER/$NAME/pg_hba.conf")"
  WANT=$'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust'
  HAVE="$($SUDO cat "$HBA" | sed 's/#.*//' | awk 'NF {$1=$1; print}' | head -n3 | sort)"
  if [ "$HAVE" != "$WANT" ]; then
    say "prepending trust rules to $HBA"
    TMP="$(mktemp)"
    { echo "# added by promgres scripts/ensure-postgres.sh: trust local connections"
      echo "local all all trust"
      echo "host all all 127.0.0.1/32 trust"
      echo "host all all ::1/128 trust"
      $SUDO cat "$HBA"; } >"$TMP"
    # Write through the existing file so owner/mode stay as they are.
    $SUDO tee "$HBA" <"$TMP" >/dev/null
    rm -f "$TMP"
  fi

  say "starting cluster $VER/$NAME"
  # No systemd in containers: bypass the systemctl redirect.
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$VER" "$NAME" start ||
    fail_with_log "pg_ctlcluster $VER $NAME start failed"
fi

# 6. Wait up to 30 s (pg_ctlcluster normally waits already; an 'online'
#    cluster may still be starting up).
for _ in $(seq 1 60); do
  if answers; then check_login; say "PostgreSQL $VER/$NAME is ready at $PGHOST:$PGPORT"; exit 0; fi
  sleep 0.5
done
fail_with_log "PostgreSQL $VER/$NAME did not answer at $PGHOST:$PGPORT within 30 s"
