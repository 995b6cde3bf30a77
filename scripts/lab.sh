#!/usr/bin/env bash
# tradeops lab: Debian containers that boot real systemd, built without any
# image registry (debootstrap + docker import + a small build layer).
#
#   scripts/lab.sh image [PLATFORM ...]         build lab images (cached by recipe hash): debian12
#                                              (default), debian13, debian12-roles, debian13-roles
#   scripts/lab.sh up                          start lb1 app1 app2 db1 mon1 (no-op when up)
#   scripts/lab.sh down                        remove every lab container and the network
#   scripts/lab.sh status                      what runs, with addresses
#   scripts/lab.sh rmi                         remove every lab image and the build cache: the next
#                                              image/up builds from nothing, as on a newcomer's machine
#
# Environment (all optional):
#   LAB_PLATFORM=debian12|debian13   image of the lab hosts            (debian12)
#   LAB_HOSTS="lb1 app1 ..."         host names, each optionally NAME:PLATFORM (lb1 app1 app2 db1 mon1)
#   LAB_PRIVILEGED=1                 use --privileged instead of the capability set
#                                    (Docker on pure cgroup v2 hosts may need it)
#   LAB_MIRROR=http://...            Debian mirror for debootstrap    (http://deb.debian.org/debian)
#   LAB_ID=lab                       names this lab: containers <LAB_ID-prefix>-<host>, its own
#                                    network, label tradeops.lab=<LAB_ID>; molecule scenarios
#                                    use their own id so they never touch the lab (and back)
#   LAB_PUBLISH=1                    publish lb1/mon1/app ports on 127.0.0.1 (0 for molecule)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB_ID=${LAB_ID:-lab}
IMAGE_REPO=tradeops-lab
if [ "$LAB_ID" = lab ]; then PREFIX=tradeops; else PREFIX="tradeops-$LAB_ID"; fi
NETWORK=${PREFIX}-net
PLATFORM=${LAB_PLATFORM:-debian12}
HOSTS=${LAB_HOSTS:-lb1 app1 app2 db1 mon1}
MIRROR=${LAB_MIRROR:-http://deb.debian.org/debian}
CACHE=${LAB_CACHE:-$ROOT/.cache/lab}
# ansible.cfg's fact cache (jsonfile, an hour): the main lab's hosts' facts, addresses included (nginx's
# upstreams are built from them). A host whose container is (re)started here may have another address:
# its cached facts are dropped, so the next run gathers them afresh.
FACTS=${LAB_FACTS:-$ROOT/.cache/facts}
# Host ports published on loopback for the demo: host:container per lab host.
declare -A PUBLISH=([lb1]="127.0.0.1:8080:80 127.0.0.1:8443:443" [mon1]="127.0.0.1:9090:9090 127.0.0.1:9093:9093"
                    [app1]="127.0.0.1:8001:8000" [app2]="127.0.0.1:8002:8000")

die() { echo "lab: $*" >&2; exit 1; }
say() { echo "lab: $*" >&2; }

# Platforms: debian12, debian13, and <platform>-roles: the same image with the Debian packages the
# roles install already unpacked (lab/image/roles-packages.txt), none of their units enabled. The
# scenarios that prove something other than installing packages use it and skip the dpkg work on
# every host; the roles still run their install tasks, which find the packages present.
# molecule/monitoring, molecule/datatier and molecule/default keep the bare image: every role's
# packages are installed from nothing there, on empty package lists.
suite_of() {
  case "$1" in
    debian12|debian12-roles) echo bookworm ;;
    debian13|debian13-roles) echo trixie ;;
    *) die "unknown platform '$1': use debian12, debian13, debian12-roles or debian13-roles" ;;
  esac
}

# The recipe: everything that decides the image's content. Its hash names the image.
recipe_hash() {
  local base=${1%-roles}
  { echo "$base $MIRROR"; cat "$ROOT/lab/image/packages.txt" "$ROOT/lab/image/Dockerfile";
    declare -f build_rootfs
    if [ "$base" != "$1" ]; then cat "$ROOT/lab/image/roles-packages.txt" "$ROOT/lab/image/Dockerfile.roles"; fi
  } | sha256sum | cut -c1-12
}

image_tag() { echo "$IMAGE_REPO:$1-$(recipe_hash "$1")"; }

build_rootfs() {
  local suite=$1 dir=$2 include
  include=$(grep -v '^#' "$ROOT/lab/image/packages.txt" | xargs | tr ' ' ',')
  debootstrap --variant=minbase --include="$include" "$suite" "$dir" "$MIRROR" >&2
  # Plain HTTP sources inside the image (TLS to outside indexes fails in the lab).
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
    "$MIRROR" "$suite" "$MIRROR" "$suite" "$suite" > "$dir/etc/apt/sources.list"
  rm -f "$dir"/etc/apt/sources.list.d/*.sources
}

cmd_image() {
  local platform=${1:-$PLATFORM} suite tag base dir t0
  suite=$(suite_of "$platform")
  tag=$(image_tag "$platform")
  if docker image inspect "$tag" >/dev/null 2>&1; then
    docker tag "$tag" "$IMAGE_REPO:$platform"
    say "image $tag is up to date"
    return 0
  fi
  if [ "${platform%-roles}" != "$platform" ]; then
    cmd_image "${platform%-roles}"
    t0=$(date +%s)
    say "installing the roles' packages into $tag (about a minute)"
    docker build -q --build-arg "BASE=$(image_tag "${platform%-roles}")" -t "$tag" -t "$IMAGE_REPO:$platform" \
      -f "$ROOT/lab/image/Dockerfile.roles" "$ROOT/lab/image" >/dev/null \
      || die "building $tag failed: run docker build -f lab/image/Dockerfile.roles by hand to see apt's output."
    say "built $tag in $(( $(date +%s) - t0 )) s"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "building the lab image needs root (debootstrap); run as root or use sudo."
  command -v debootstrap >/dev/null || "$ROOT/scripts/bootstrap.sh" apt debootstrap
  [ -e "/usr/share/debootstrap/scripts/$suite" ] || die "this debootstrap does not know '$suite': install a newer debootstrap."
  t0=$(date +%s)
  base="tradeops-rootfs:$platform-$(recipe_hash "$platform")"
  mkdir -p "$CACHE"
  dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$dir'" EXIT
  say "debootstrap $suite into $dir (a few minutes)"
  build_rootfs "$suite" "$dir" || die "debootstrap of $suite failed: see the lines above (mirror $MIRROR reachable?)."
  tar -C "$dir" -c . | docker import - "$base" >/dev/null
  rm -rf "$dir"; trap - EXIT
  docker build -q --build-arg "BASE=$base" -t "$tag" -t "$IMAGE_REPO:$platform" \
    -f "$ROOT/lab/image/Dockerfile" "$ROOT/lab/image" >/dev/null
  docker rmi "$base" >/dev/null 2>&1 || true
  say "built $tag in $(( $(date +%s) - t0 )) s"
}

# "app1:debian13" -> debian13, "app1" -> $PLATFORM
platform_of() { case "$1" in *:*) echo "${1#*:}" ;; *) echo "$PLATFORM" ;; esac; }

run_flags() {
  if [ "${LAB_PRIVILEGED:-0}" = 1 ]; then
    echo "--privileged --cgroupns host"
  else
    echo "--cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined --cgroupns host"
  fi
}

wait_systemd() {
  local c=$1 state i
  for i in $(seq 1 90); do
    state=$(docker exec "$c" systemctl is-system-running 2>/dev/null || true)
    case "$state" in
      running|degraded) return 0 ;;
    esac
    sleep 1
  done
  echo "$state"
  return 1
}

cmd_up() {
  local tag h c started=() state p pubs entry platform
  for platform in $(for entry in $HOSTS; do platform_of "$entry"; done | sort -u); do
    suite_of "$platform" >/dev/null
    docker image inspect "$(image_tag "$platform")" >/dev/null 2>&1 || cmd_image "$platform"
  done
  docker network inspect "$NETWORK" >/dev/null 2>&1 || \
    docker network create --label "tradeops.lab=$LAB_ID" "$NETWORK" >/dev/null
  for entry in $HOSTS; do
    h=${entry%%:*}
    tag=$(image_tag "$(platform_of "$entry")")
    c="${PREFIX}-$h"
    state=$(docker inspect -f '{{.State.Status}} {{.Config.Image}}' "$c" 2>/dev/null || true)
    case "$state" in
      "running "*)
        [ "${state#running }" = "$tag" ] || \
          say "$h runs ${state#running } (recipe now $tag): make lab-down lab-up to take the new image"
        continue ;;
      "") ;;
      *) say "$h exists but is ${state%% *}: starting it"; docker start "$c" >/dev/null; started+=("$c"); continue ;;
    esac
    pubs=()
    if [ "${LAB_PUBLISH:-1}" = 1 ]; then
      for p in ${PUBLISH[$h]:-}; do pubs+=(-p "$p"); done
    fi
    # shellcheck disable=SC2046
    docker run -d --name "$c" --hostname "$h" --network "$NETWORK" --network-alias "$h" \
      --label "tradeops.lab=$LAB_ID" --label "tradeops.host=$h" \
      $(run_flags) -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
      --tmpfs /run --tmpfs /run/lock --tmpfs /tmp:exec,mode=1777 \
      "${pubs[@]}" "$tag" >/dev/null
    started+=("$c")
  done
  if [ "$LAB_ID" = lab ]; then
    for c in "${started[@]}"; do rm -f "$FACTS/${c#"${PREFIX}"-}"; done
  fi
  for c in "${started[@]}"; do
    # Every new host starts as one whose image was built a moment ago: the image's package
    # lists are empty and their directory's mtime says "updated just now" (minimal and cloud
    # images boot the same way), so apt's cache age alone would skip the update. Whatever
    # the image's age, a step that only works on a host whose lists are filled or old fails
    # in every lab and every molecule scenario, not only in the hour after an image build.
    docker exec "$c" touch /var/lib/apt/lists 2>/dev/null || true
    if ! state=$(wait_systemd "$c"); then
      say "$c did not boot systemd (state: ${state:-none}); its journal ends:"
      docker exec "$c" journalctl -b --no-pager -n 15 >&2 2>/dev/null || docker logs --tail 15 "$c" >&2 || true
      docker rm -f "${started[@]}" >/dev/null 2>&1 || true
      die "lab hosts did not boot systemd: check the Docker flags (LAB_PRIVILEGED=1 on cgroup v2 hosts) and re-run; the containers started now were removed."
    fi
  done
  [ ${#started[@]} -eq 0 ] && say "lab already up ($HOSTS)" || say "lab up: ${started[*]}"
}

cmd_down() {
  local ids entry
  ids=$(docker ps -aq --filter "label=tradeops.lab=$LAB_ID")
  [ -n "$ids" ] && docker rm -f $ids >/dev/null
  docker network ls -q --filter "label=tradeops.lab=$LAB_ID" | xargs -r docker network rm >/dev/null
  if [ "$LAB_ID" = lab ]; then
    for entry in $HOSTS; do rm -f "$FACTS/${entry%%:*}"; done
  fi
  say "lab $LAB_ID down"
}

cmd_status() {
  docker ps -a --filter "label=tradeops.lab=$LAB_ID" \
    --format 'table {{.Label "tradeops.host"}}\t{{.Status}}\t{{.Image}}\t{{.Ports}}'
}

# CI (.ci/run) starts here so that it builds the images as a newcomer's first run does.
cmd_rmi() {
  local ids id pass
  # A -roles image is built on its base image: removing the base first fails with
  # "image has dependent child images". Remove what can go, then again, until none of
  # ours is left (untagged parents go with their last child).
  for pass in 1 2 3 4; do
    ids=$(docker images -q "$IMAGE_REPO" | sort -u)
    [ -n "$ids" ] || break
    for id in $ids; do docker image rm -f "$id" >/dev/null 2>&1 || true; done
  done
  ids=$(docker images -q "$IMAGE_REPO" | sort -u)
  [ -z "$ids" ] || die "lab images $ids could not be removed: 'docker image ls -a' and 'docker ps -a' show what still uses them."
  docker builder prune -af >/dev/null 2>&1 || true
  say "lab images removed: the next image/up builds from nothing"
}

case "${1:-}" in
  image) shift; for p in "${@:-$PLATFORM}"; do cmd_image "$p"; done ;;
  image-tag) image_tag "${2:-$PLATFORM}" ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  rmi) cmd_rmi ;;
  *) die "usage: $0 image [debian12|debian13|debian12-roles|debian13-roles ...] | up | down | status | rmi" ;;
esac
