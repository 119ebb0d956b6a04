#!/usr/bin/env bash
# ensure-chromium.sh — make sure a headless-capable `chromium` (Debian package) is on PATH,
# for tests/ha_page.rs, which renders the /ha page in a real browser. Idempotent; prints the
# version at the end. When it cannot be installed (no package, no apt), it prints a notice and
# exits 0: the test then fails loudly by itself unless PROMGRES_SKIP_BROWSER=1 is set.
set -uo pipefail

say() { echo "ensure-chromium: $*" >&2; }
skip() {
  say "SKIP: $* — tests/ha_page.rs will fail unless PROMGRES_SKIP_BROWSER=1"
  exit 0
}

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v chromium >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || skip "chromium is not installed and there is no apt-get"
  say "installing the Debian package: chromium"

  # Another apt/dpkg may be running in the background: wait up to 5 min for its locks.
  for _ in $(seq 1 300); do
    $SUDO fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1 || break
    sleep 1
  done

  APT=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
  # The package lists may be missing or stale: update once, and install. Fonts come as
  # chromium's dependencies (fonts-liberation), so pages render text.
  "${APT[@]}" update >&2 || say "apt-get update failed; trying the lists there are"
  "${APT[@]}" install -y --no-install-recommends chromium fonts-liberation >&2 ||
    skip "apt-get install chromium failed"
  command -v chromium >/dev/null 2>&1 || skip "chromium still not on PATH after installing it"
fi

chromium --version 2>/dev/null | head -n1 || true
