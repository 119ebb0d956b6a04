#!/usr/bin/env bash
# ensure-prometheus.sh — make sure a `prometheus` binary is installed (Debian
# package), without letting the package start a daemon. Idempotent; prints the
# version at the end. `--bench` also installs what `make bench` runs beside
# promgres: victoria-metrics and prometheus-node-exporter (their daemons are
# not started either; the bench starts its own).
set -euo pipefail

say() { echo "ensure-prometheus: $*" >&2; }
die() { echo "ensure-prometheus: ERROR: $*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

find_prom() { command -v prometheus 2>/dev/null || { [ -x /usr/bin/prometheus ] && echo /usr/bin/prometheus; }; }

PACKAGES=()
find_prom >/dev/null || PACKAGES+=(prometheus)
if [ "${1:-}" = "--bench" ]; then
  [ -x /usr/bin/victoria-metrics ] || PACKAGES+=(victoria-metrics)
  [ -x /usr/bin/prometheus-node-exporter ] || PACKAGES+=(prometheus-node-exporter)
fi

if [ "${#PACKAGES[@]}" -gt 0 ]; then
  say "installing the Debian packages: ${PACKAGES[*]}"

  # Another apt/dpkg may be running in the background: wait up to 5 min for
  # its locks (apt-get's own lock timeout covers the dpkg lock; the loop also
  # covers `apt-get update`'s lists lock on older apt).
  for _ in $(seq 1 300); do
    $SUDO fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1 || break
    sleep 1
  done

  # The postinst would start the service via invoke-rc.d; a policy-rc.d that
  # exits 101 forbids that. Only add (and later remove) our own, so an existing
  # one (e.g. Docker's) is left untouched.
  POLICY=/usr/sbin/policy-rc.d
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, from promgres scripts/ensure-prometheus.sh\nexit 101\n' |
      $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    trap '$SUDO rm -f "$POLICY"' EXIT
  fi

  APT=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
  "${APT[@]}" update || die "apt-get update failed"
  "${APT[@]}" install -y --no-install-recommends "${PACKAGES[@]}" || die "apt-get install ${PACKAGES[*]} failed"

fi
PROM="$(find_prom)" || die "prometheus still not found after installing the package"

"$PROM" --version 2>&1 | head -n1
