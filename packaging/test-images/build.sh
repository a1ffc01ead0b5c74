#!/usr/bin/env bash
# Builds the OCI image layouts that the image-service tests push to a local
# registry (see README.md beside this file for what each image holds).
#
#   packaging/test-images/build.sh OUTDIR
#
# OUTDIR gets one OCI image layout per directory (busybox, multiarch, big,
# crafted) and images.json, a summary of every tag's digests and sizes.
# The base is Debian's dynamically linked busybox, fetched once with
# `apt-get download busybox` into $UCRI_IMAGES_CACHE (default OUTDIR/.cache),
# plus the host's glibc libraries it needs. Tar entries, mtimes, owners and
# compression are fixed, so digests are stable across runs on one host.
# Exit status 3 means a prerequisite is missing (named on stderr).
set -euo pipefail
shopt -s inherit_errexit
umask 022
export LC_ALL=C TZ=UTC

EPOCH=1700000000
CREATED=2023-11-14T22:13:20Z
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MT_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_INDEX=application/vnd.oci.image.index.v1+json
MT_CONFIG=application/vnd.oci.image.config.v1+json
MT_LAYER=application/vnd.oci.image.layer.v1.tar
TAR_OPTS=(--format=posix '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime'
  --numeric-owner --mtime=@"$EPOCH" --no-recursion -b1)

log() { printf 'test-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
missing() { log "missing prerequisite: $*"; exit 3; }

check_tools() {
  local t
  for t in apt-get dpkg-deb jq tar gzip zstd sha256sum openssl ldd; do
    command -v "$t" >/dev/null || missing "$t"
  done
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# The OCI architecture of this host and of the "other" multiarch platform.
host_arch() {
  case "$(dpkg --print-architecture)" in
    amd64) echo amd64 ;;
    arm64) echo arm64 ;;
    *) die "unsupported host architecture $(dpkg --print-architecture)" ;;
  esac
}

# ---------------------------------------------------------------- busybox

fetch_busybox() { # CACHE -> prints the .deb path
  local cache=$1 deb err
  mkdir -p "$cache"
  deb=$(find "$cache" -maxdepth 1 -name 'busybox_*.deb' | sort | tail -n1)
  if [ -z "$deb" ]; then
    local tmp; tmp=$(mktemp -d "$cache/dl.XXXXXX")
    if ! err=$(cd "$tmp" && apt-get download busybox 2>&1); then
      rm -rf "$tmp"
      missing "busybox .deb (\`apt-get download busybox\` failed; run apt-get update?): $err"
    fi
    mv "$tmp"/busybox_*.deb "$cache"/
    rm -rf "$tmp"
    deb=$(find "$cache" -maxdepth 1 -name 'busybox_*.deb' | sort | tail -n1)
  fi
  [ -n "$deb" ] || missing "busybox .deb in $cache"
  echo "$deb"
}

# Copies every shared library `ldd BIN` names into ROOT at the same path.
copy_libs() { # BIN ROOT
  local bin=$1 root=$2 out lib
  out=$(ldd "$bin" 2>&1) || die "ldd $bin: $out"
  while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
    chmod 0755 "$root$lib"
  done < <(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$out")
}

stage_base() { # DEB DIR
  local deb=$1 dir=$2 x name applets
  x=$(mktemp -d "$WORK/deb.XXXXXX")
  dpkg-deb -x "$deb" "$x" || die "dpkg-deb -x $deb"
  mkdir -p "$dir/bin" "$dir/etc" "$dir/work" "$dir/tmp" "$dir/root"
  install -m 0755 "$x/bin/busybox" "$dir/bin/busybox"
  applets=$("$dir/bin/busybox" --list) || die "busybox --list"
  for name in $applets; do
    [ "$name" = busybox ] || ln "$dir/bin/busybox" "$dir/bin/$name"
  done
  copy_libs "$dir/bin/busybox" "$dir"
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'app:x:1000:1000:app:/home/app:/bin/sh' \
    'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$dir/etc/passwd"
  printf '%s\n' 'root:x:0:' 'app:x:1000:' 'nogroup:x:65534:' >"$dir/etc/group"
  chmod 1777 "$dir/tmp"
  chmod 0700 "$dir/root"
}

# ---------------------------------------------------------------- layers

# Writes $L/NAME.tar from DIR: the entries in LIST (one relative path a line,
# in archive order) owned by 0:0, then those in LIST1000 owned by 1000:1000.
make_tar() { # NAME DIR LIST [LIST1000] [extra tar args...]
  local name=$1 dir=$2 list=$3 list1000=${4:-}
  shift 4 2>/dev/null || shift $#
  tar "${TAR_OPTS[@]}" "$@" --owner=0 --group=0 -C "$dir" -T "$list" -cf "$L/$name.tar" \
    || die "tar $name"
  if [ -n "$list1000" ]; then
    tar "${TAR_OPTS[@]}" --owner=1000 --group=1000 -C "$dir" -T "$list1000" -cf "$L/$name.1000.tar" \
      || die "tar $name (uid 1000 part)"
    tar -b1 -A -f "$L/$name.tar" "$L/$name.1000.tar" || die "tar -A $name"
    rm "$L/$name.1000.tar"
  fi
  sha256 "$L/$name.tar" >"$L/$name.diffid"
}

compress() { # NAME gz|zst
  case "$2" in
    gz) [ -e "$L/$1.tar.gz" ] || gzip -n -6 -c "$L/$1.tar" >"$L/$1.tar.gz" ;;
    zst) [ -e "$L/$1.tar.zst" ] || zstd -q -3 -c --no-progress "$L/$1.tar" >"$L/$1.tar.zst" ;;
  esac
}

# Sorted relative paths under DIR, one a line.
list_tree() { (cd "$1" && find . -mindepth 1 | sed 's,^\./,,' | sort); }

layer_base() {
  local dir=$WORK/stage/base deb
  deb=$(fetch_busybox "$CACHE")
  stage_base "$deb" "$dir"
  # bin/busybox first, so every applet is a hard link to it.
  { printf 'bin\nbin/busybox\n'; list_tree "$dir" | grep -vxE 'bin|bin/busybox'; } >"$WORK/base.list"
  make_tar base "$dir" "$WORK/base.list"
}

layer_files() {
  local d=$WORK/stage/files
  mkdir -p "$d/data" "$d/opaque" "$d/home/app" "$d/tmpdir"
  echo keep >"$d/data/keep.txt"
  echo remove me >"$d/data/remove-me.txt"
  echo old a >"$d/opaque/old-a.txt"
  echo old b >"$d/opaque/old-b.txt"
  echo owned by app >"$d/home/app/owned.txt"
  ln -s keep.txt "$d/data/link"
  ln "$d/data/keep.txt" "$d/data/hard"
  chmod 0640 "$d/home/app/owned.txt"
  chmod 1777 "$d/tmpdir"
  printf '%s\n' data data/keep.txt data/hard data/link data/remove-me.txt home \
    opaque opaque/old-a.txt opaque/old-b.txt tmpdir >"$WORK/files.list"
  printf '%s\n' home/app home/app/owned.txt >"$WORK/files.1000.list"
  make_tar files "$d" "$WORK/files.list" "$WORK/files.1000.list"
}

layer_whiteouts() {
  local d=$WORK/stage/whiteouts
  mkdir -p "$d/data" "$d/opaque"
  : >"$d/data/.wh.remove-me.txt"
  : >"$d/opaque/.wh..wh..opq"
  echo new >"$d/opaque/new.txt"
  printf '%s\n' data data/.wh.remove-me.txt opaque opaque/.wh..wh..opq opaque/new.txt \
    >"$WORK/whiteouts.list"
  make_tar whiteouts "$d" "$WORK/whiteouts.list"
}

layer_arch() { # ARCH
  local d=$WORK/stage/arch-$1
  mkdir -p "$d"
  printf '%s\n' "$1" >"$d/arch.txt"
  echo arch.txt >"$WORK/arch-$1.list"
  make_tar "arch-$1" "$d" "$WORK/arch-$1.list"
}

# 20 MiB of AES-CTR keystream (incompressible, but the same every run).
layer_random() { # N
  local d=$WORK/stage/random-$1 key
  mkdir -p "$d/big"
  key=$(printf 'ucri-big-%s' "$1" | sha256sum | cut -d' ' -f1)
  head -c 20M /dev/zero | openssl enc -aes-256-ctr -K "$key" -iv 00000000000000000000000000000000 \
    >"$d/big/blob-$1" || die "openssl enc"
  printf '%s\n' big "big/blob-$1" >"$WORK/random-$1.list"
  make_tar "random-$1" "$d" "$WORK/random-$1.list"
}

# A layer whose staged file f is archived under a hostile name (-P keeps
# leading "/" and "..", which GNU tar strips otherwise).
layer_crafted() { # TAG
  local d=$WORK/stage/crafted-$1
  mkdir -p "$d"
  echo escaped >"$d/f"
  case "$1" in
    dotdot)
      echo f >"$WORK/crafted-$1.list"
      make_tar "crafted-$1" "$d" "$WORK/crafted-$1.list" "" -P \
        --transform 's,^f$,../../escape-dotdot.txt,' ;;
    abs-symlink)
      ln -s /tmp "$d/evil"
      printf '%s\n' evil f >"$WORK/crafted-$1.list"
      make_tar "crafted-$1" "$d" "$WORK/crafted-$1.list" "" -P \
        --transform 's,^f$,evil/escape-symlink.txt,rSH' ;;
    abs-path)
      echo f >"$WORK/crafted-$1.list"
      make_tar "crafted-$1" "$d" "$WORK/crafted-$1.list" "" -P \
        --transform 's,^f$,/tmp/escape-abs.txt,' ;;
    hardlink-out)
      # A regular file f, then passwd-link: a hard link whose target is
      # rewritten to ../../etc/passwd.
      ln "$d/f" "$d/passwd-link"
      printf '%s\n' f passwd-link >"$WORK/crafted-$1.list"
      make_tar "crafted-$1" "$d" "$WORK/crafted-$1.list" "" -P \
        --transform 's,^f$,../../etc/passwd,hRS' ;;
  esac
}

# ---------------------------------------------------------------- blobs and JSON

init_layout() { # LAYOUT
  mkdir -p "$OUT/$1/blobs/sha256"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$OUT/$1/oci-layout"
  : >"$WORK/refs-$1"
}

# Adds FILE to LAYOUT's blobs; prints its descriptor.
put_blob() { # LAYOUT MEDIATYPE FILE
  local hex size
  hex=$(sha256 "$3")
  size=$(stat -c %s "$3")
  [ -e "$OUT/$1/blobs/sha256/$hex" ] || install -m 0644 "$3" "$OUT/$1/blobs/sha256/$hex"
  jq -cn --arg mt "$2" --arg d "sha256:$hex" --argjson s "$size" \
    '{mediaType: $mt, digest: $d, size: $s}'
}

put_json() { # LAYOUT MEDIATYPE JSON
  local f; f=$(mktemp "$WORK/json.XXXXXX")
  printf '%s' "$3" >"$f"
  put_blob "$1" "$2" "$f"
}

# Descriptor of layer NAME compressed as gz|zst|tar, with the build-only
# fields diffId and name (the manifest step strips them).
layer() { # LAYOUT NAME gz|zst|tar
  local file=$L/$2.tar mt=$MT_LAYER
  case "$3" in
    gz) compress "$2" gz; file=$L/$2.tar.gz; mt=$MT_LAYER+gzip ;;
    zst) compress "$2" zst; file=$L/$2.tar.zst; mt=$MT_LAYER+zstd ;;
  esac
  put_blob "$1" "$mt" "$file" | jq -c --arg id "sha256:$(cat "$L/$2.diffid")" --arg n "$2" \
    '. + {diffId: $id, name: $n}'
}

# Image config: ARCH, USER and LABEL over the busybox run settings.
busybox_config() { # ARCH USER LABEL
  jq -cn --arg arch "$1" --arg user "$2" --arg lbl "$3" --arg created "$CREATED" --arg path "$PATH_ENV" '{
    created: $created, architecture: $arch, os: "linux",
    config: {User: $user, Env: [$path, "UCRI_TEST=1"], Entrypoint: ["/bin/sh", "-c"],
      Cmd: ["echo hello"], WorkingDir: "/work", StopSignal: "SIGTERM",
      Labels: {"org.ucri.test": $lbl}}}'
}

minimal_config() { # ARCH LABEL
  jq -cn --arg arch "$1" --arg lbl "$2" --arg created "$CREATED" --arg path "$PATH_ENV" '{
    created: $created, architecture: $arch, os: "linux",
    config: {Env: [$path], Cmd: ["/bin/sh"], Labels: {"org.ucri.test": $lbl}}}'
}

# Writes config (CONFIG plus rootfs and history from the layers) and
# manifest into LAYOUT; prints the manifest descriptor with its platform and
# records the summary entry in $WORK/info/HEX.json.
manifest() { # LAYOUT CONFIG LAYER_DESC...
  local layout=$1 config=$2; shift 2
  local layers; layers=$(printf '%s\n' "$@" | jq -cs .)
  config=$(jq -c --argjson ls "$layers" --arg created "$CREATED" '. + {
    rootfs: {type: "layers", diff_ids: [$ls[].diffId]},
    history: [$ls[] | {created: $created, created_by: ("ucri test-images: layer " + .name)}]}' <<<"$config")
  local cdesc; cdesc=$(put_json "$layout" "$MT_CONFIG" "$config")
  local m; m=$(jq -cn --arg mt "$MT_MANIFEST" --argjson c "$cdesc" --argjson ls "$layers" \
    '{schemaVersion: 2, mediaType: $mt, config: $c, layers: [$ls[] | del(.diffId, .name)]}')
  local mdesc; mdesc=$(put_json "$layout" "$MT_MANIFEST" "$m")
  local platform; platform=$(jq -c '{architecture, os}' <<<"$config")
  jq -cn --argjson d "$mdesc" --argjson c "$cdesc" --argjson ls "$layers" --argjson p "$platform" \
    '$d + {platform: $p, config: $c.digest, configSize: $c.size,
      layers: [$ls[] | del(.name)], compressedSize: ([$ls[].size] | add)}' \
    >"$WORK/info/$(jq -r '.digest | ltrimstr("sha256:")' <<<"$mdesc").json"
  jq -c --argjson p "$platform" '. + {platform: $p}' <<<"$mdesc"
}

# An image index over MANIFEST_DESC...; prints its descriptor.
index() { # LAYOUT MANIFEST_DESC...
  local layout=$1; shift
  local ms; ms=$(printf '%s\n' "$@" | jq -cs .)
  local idx; idx=$(jq -cn --arg mt "$MT_INDEX" --argjson ms "$ms" '{schemaVersion: 2, mediaType: $mt, manifests: $ms}')
  local desc; desc=$(put_json "$layout" "$MT_INDEX" "$idx")
  local infos; infos=$(for m in "$@"; do cat "$WORK/info/$(jq -r '.digest | ltrimstr("sha256:")' <<<"$m").json"; done | jq -cs .)
  jq -cn --argjson d "$desc" --argjson is "$infos" \
    '$d + {manifests: $is, compressedSize: ([$is[].compressedSize] | add)}' \
    >"$WORK/info/$(jq -r '.digest | ltrimstr("sha256:")' <<<"$desc").json"
  echo "$desc"
}

tag() { # LAYOUT TAG DESC
  local hex; hex=$(jq -r '.digest | ltrimstr("sha256:")' <<<"$3")
  jq -c --arg t "$2" 'del(.platform) + {annotations: {"org.opencontainers.image.ref.name": $t}}' <<<"$3" \
    >>"$WORK/refs-$1"
  jq -c --arg l "$1" --arg t "$2" '{layout: $l, tag: $t, image: .}' "$WORK/info/$hex.json" >>"$WORK/summary"
}

finish_layout() { # LAYOUT
  jq -cs --arg mt "$MT_INDEX" '{schemaVersion: 2, mediaType: $mt, manifests: .}' "$WORK/refs-$1" \
    >"$OUT/$1/index.json"
}

# ---------------------------------------------------------------- images

build_busybox() {
  local l=busybox c cu base files whiteouts m
  init_layout $l
  base=$(layer $l base gz)
  files=$(layer $l files gz)
  whiteouts=$(layer $l whiteouts gz)
  c=$(busybox_config "$ARCH" 0 busybox)
  m=$(manifest $l "$c" "$base" "$files" "$whiteouts")
  tag $l latest "$m"
  files=$(layer $l files zst)
  m=$(manifest $l "$c" "$base" "$files" "$whiteouts")
  tag $l zstd "$m"
  files=$(layer $l files tar)
  m=$(manifest $l "$c" "$base" "$files" "$whiteouts")
  tag $l uncompressed "$m"
  files=$(layer $l files gz)
  cu=$(busybox_config "$ARCH" app busybox)
  m=$(manifest $l "$cu" "$base" "$files" "$whiteouts")
  tag $l user "$m"
  finish_layout $l
}

# linux/$ARCH: the busybox image plus /arch.txt; linux/$OTHER_ARCH: only /arch.txt.
build_multiarch() {
  local l=multiarch host other c layers=() n idx
  init_layout $l
  layer_arch "$ARCH"
  layer_arch "$OTHER_ARCH"
  for n in base files whiteouts "arch-$ARCH"; do
    layers+=("$(layer $l "$n" gz)")
  done
  c=$(busybox_config "$ARCH" 0 busybox)
  host=$(manifest $l "$c" "${layers[@]}")
  c=$(minimal_config "$OTHER_ARCH" multiarch)
  n=$(layer $l "arch-$OTHER_ARCH" gz)
  other=$(manifest $l "$c" "$n")
  if [ "$ARCH" = amd64 ]; then
    idx=$(index $l "$host" "$other")
  else
    idx=$(index $l "$other" "$host")
  fi
  tag $l latest "$idx"
  finish_layout $l
}

build_big() {
  local l=big n c m layers=()
  init_layout $l
  layers+=("$(layer $l base gz)")
  for n in 1 2 3 4 5; do
    layer_random $n
    layers+=("$(layer $l "random-$n" gz)")
  done
  c=$(busybox_config "$ARCH" 0 big)
  m=$(manifest $l "$c" "${layers[@]}")
  tag $l latest "$m"
  finish_layout $l
}

build_crafted() {
  local l=crafted t c d m
  init_layout $l
  for t in dotdot abs-symlink abs-path hardlink-out; do
    layer_crafted "$t"
    c=$(minimal_config "$ARCH" "crafted-$t")
    d=$(layer $l "crafted-$t" gz)
    m=$(manifest $l "$c" "$d")
    tag $l "$t" "$m"
  done
  finish_layout $l
}

write_summary() {
  jq -s --arg arch "$ARCH" --arg other "$OTHER_ARCH" '{
    arch: $arch, otherArch: $other,
    layouts: (reduce .[] as $e ({}; .[$e.layout][$e.tag] = $e.image))}' "$WORK/summary" \
    >"$OUT/images.json"
}

main() {
  [ $# -eq 1 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
  check_tools
  mkdir -p "$1"
  OUT=$(cd "$1" && pwd)
  CACHE=${UCRI_IMAGES_CACHE:-$OUT/.cache}
  ARCH=$(host_arch)
  if [ "$ARCH" = amd64 ]; then OTHER_ARCH=arm64; else OTHER_ARCH=amd64; fi
  WORK=$(mktemp -d "$OUT/.work.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  L=$WORK/layers
  mkdir -p "$L" "$WORK/info" "$WORK/stage"
  : >"$WORK/summary"
  rm -rf "$OUT/busybox" "$OUT/multiarch" "$OUT/big" "$OUT/crafted" "$OUT/images.json"
  log "building layers"
  layer_base; layer_files; layer_whiteouts
  build_busybox; build_multiarch; build_crafted
  log "building big (100 MiB of random layers)"
  build_big
  write_summary
  log "wrote $OUT/images.json"
}

main "$@"
