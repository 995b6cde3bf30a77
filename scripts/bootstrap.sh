#!/usr/bin/env bash
# tradeops bootstrap: the controller's Python tooling (.venv) and a Docker engine.
#
#   scripts/bootstrap.sh venv     .venv from the newest Python >= 3.12 (3.11 fallback)
#   scripts/bootstrap.sh docker   a running Docker engine (installs docker.io when root on Debian)
#   scripts/bootstrap.sh servers  PostgreSQL, Redis, systemd-analyze binaries on the controller (unit tests
#                                 start throwaway instances; the packaged services stay stopped)
#   scripts/bootstrap.sh all      venv + docker (default)
#   scripts/bootstrap.sh apt PKG  Debian packages, as root (lists refreshed, waits for a dpkg lock held by
#                                 another apt run — unattended-upgrades on a fresh machine — up to 5 min)
#
# Idempotent and fast when already done: the venv is rebuilt only when
# pyproject.toml or the chosen interpreter changes; dockerd is started only when
# `docker info` fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
DOCKERD_LOG=/var/log/tradeops-dockerd.log

die() { echo "bootstrap: $*" >&2; exit 1; }
say() { echo "bootstrap: $*" >&2; }

# --- Python -----------------------------------------------------------------

# Prints "MAJOR.MINOR PATH" for each candidate interpreter that runs.
python_candidates() {
  local c
  {
    for c in python3.14 python3.13 python3.12 python3.11 python3; do
      command -v "$c" 2>/dev/null || true
    done
    for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/bin/python3 /usr/bin/python3 /usr/local/bin/python3*; do
      if [ -x "$c" ]; then echo "$c"; fi
    done
  } | sort -u | while read -r c; do
    v=$("$c" -c 'import sys, venv, ensurepip; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
    echo "$v $c"
  done
}

pick_python() {
  # Newest >= 3.12; else 3.11 (pyproject's markers then select the ansible-core
  # line that still supports it).
  local best
  best=$(python_candidates | awk '{split($1,v,"."); if (v[1]==3 && v[2]>=11) print v[2], $2}' \
         | sort -k1,1nr | head -1 | cut -d' ' -f2)
  [ -n "$best" ] || die "no usable Python: need CPython >= 3.11 with venv (>= 3.12 preferred). Install python3.12 (pyenv install 3.12) or Debian's python3 python3-venv, then re-run."
  echo "$best"
}

ensure_venv() {
  local py stamp want
  py=$(pick_python)
  # Only what decides the venv's content: the interpreter and the dependency
  # group (editing ruff or pytest settings must not rebuild the venv).
  want="$("$py" -c 'import sys; print(sys.version.split()[0])') $(awk '/^\[/{on=($0=="[dependency-groups]")} on' "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
  stamp="$VENV/.tradeops-stamp"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/ansible-playbook" ]; then
    return 0
  fi
  say "creating .venv with $py ($want)"
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=25.1' >&2
  # Dependency group "dev" of pyproject.toml: ansible (with its bundled
  # collections), molecule, linters, test tools.
  (cd "$ROOT" && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --group dev) >&2
  ensure_collections
  echo "$want" > "$stamp"
  say "python tooling ready: $("$VENV/bin/ansible" --version | sed -n 1p)"
}

# The bundled `ansible` package already ships every collection of
# requirements.yml; Galaxy is asked only for what is missing, and only when it
# answers.
ensure_collections() {
  local missing
  missing=$("$VENV/bin/python" "$ROOT/scripts/collections_missing.py" "$ROOT/requirements.yml")
  [ -z "$missing" ] && return 0
  say "collections missing from the bundle: $missing"
  if "$VENV/bin/ansible-galaxy" collection install -r "$ROOT/requirements.yml" \
       -p "$ROOT/.collections" --timeout 20 >&2; then
    return 0
  fi
  die "collections $missing are not installed and Galaxy is not reachable. Install them into $ROOT/.collections (ansible-galaxy collection install -p .collections ...) from a machine that reaches Galaxy, then re-run."
}

# --- Debian packages -----------------------------------------------------------

# The one way this script (and scripts/lab.sh) installs Debian packages: lists refreshed first
# (a fresh machine's may be empty), a dpkg lock held by another apt run waited for instead of
# failing at once.
APT_LOCK_WAIT=300
apt_install() {
  [ "$(id -u)" = 0 ] && [ -r /etc/debian_version ] || \
    die "installing $* needs root on Debian: apt-get install $* (as root), then re-run."
  say "installing $* from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=$APT_LOCK_WAIT update -qq >&2 \
    || die "apt-get update failed: see the lines above; fix apt's sources, then re-run."
  apt-get -o DPkg::Lock::Timeout=$APT_LOCK_WAIT install -y -qq --no-install-recommends "$@" >&2 \
    || die "apt-get install $* failed: see the lines above; fix apt, then re-run."
}

# --- PostgreSQL / Redis binaries for the unit tests ------------------------------

ensure_servers() {
  # initdb/pg_ctl and redis-server for throwaway test servers; systemd-analyze
  # scores rendered units offline (no running systemd needed); promtool (Debian's
  # prometheus) runs the alert rules' unit tests.
  # node/npm + a C++ toolchain: scripts/check_powershell.py installs tree-sitter-powershell
  # (compiled by node-gyp) from npm into ~/.cache/tradeops/npm to parse the .ps1 files. age: the backups
  # encrypt every file with it (tests/unit/plugins/test_tradeops_backup.py, tests/security/hostile).
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null \
     && command -v systemd-analyze >/dev/null && command -v promtool >/dev/null \
     && command -v node >/dev/null && command -v npm >/dev/null && command -v g++ >/dev/null && command -v make >/dev/null \
     && command -v age >/dev/null; then
    return 0
  fi
  [ "$(id -u)" = 0 ] && [ -r /etc/debian_version ] || \
    die "unit tests need PostgreSQL, Redis, systemd-analyze and age binaries: apt-get install postgresql redis-server systemd age (as root), then re-run."
  # Only what is missing: a machine with another vendor's node (NodeSource's nodejs bundles npm
  # and conflicts with Debian's npm package) keeps it.
  local pkgs=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || pkgs+=(postgresql)
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  command -v systemd-analyze >/dev/null || pkgs+=(systemd)
  command -v promtool >/dev/null || pkgs+=(prometheus)
  command -v node >/dev/null || pkgs+=(nodejs)
  command -v npm >/dev/null || pkgs+=(npm node-gyp)
  command -v g++ >/dev/null || pkgs+=(g++)
  command -v make >/dev/null || pkgs+=(make)
  command -v age >/dev/null || pkgs+=(age)
  apt_install "${pkgs[@]}"
}

# --- Docker -----------------------------------------------------------------

# Every lab container boots systemd, which takes inotify instances of the host's per-user
# budget (Debian's default 128): about 20 containers at once exhaust it and the next one fails
# to boot ("Failed to create inotify object: Too many open files"). Raised when root, never lowered.
INOTIFY_INSTANCES=1024
raise_inotify() {
  local now
  now=$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 0)
  if [ "$now" -lt "$INOTIFY_INSTANCES" ] && [ "$(id -u)" = 0 ]; then
    sysctl -qw fs.inotify.max_user_instances="$INOTIFY_INSTANCES" \
      && say "fs.inotify.max_user_instances $now -> $INOTIFY_INSTANCES (lab containers boot systemd)"
  fi
}

ensure_docker() {
  raise_inotify
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    die "no Docker engine answers and we are not root. Start Docker (systemctl start docker) or add your user to the docker group, then re-run."
  fi
  [ -r /etc/debian_version ] || die "no Docker engine answers and this is not Debian. Install and start Docker Engine for your OS, then re-run."
  if ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io
  fi
  if ! pgrep -x dockerd >/dev/null; then
    say "starting dockerd (log: $DOCKERD_LOG)"
    # No systemd on this controller: dockerd runs in the background, detached.
    setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 < /dev/null &
  fi
  local i
  for i in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { say "docker engine ready"; return 0; }
    sleep 1
  done
  die "dockerd did not answer within 60 s: see $DOCKERD_LOG"
}

case "${1:-all}" in
  venv) ensure_venv ;;
  servers) ensure_servers ;;
  docker) ensure_docker ;;
  all) ensure_venv; ensure_docker ;;
  python) pick_python ;;
  apt) shift; [ $# -gt 0 ] || die "apt: name the packages"; apt_install "$@" ;;
  *) die "unknown step '$1': use venv, docker, servers, all, python or apt PKG..." ;;
esac
