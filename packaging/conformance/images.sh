#!/usr/bin/env bash
# Builds OCI image layouts standing in for every image that critest
# (cri-tools v1.36.0) and `critest -benchmark` pull, so that they run offline
# (see README.md beside this file for what each image holds and which spec
# uses it). The only download is three Debian packages, once.
#
#   packaging/conformance/images.sh OUTDIR
#
# OUTDIR gets one OCI image layout per upstream repository, at the
# repository's name (OUTDIR/registry.k8s.io/pause, OUTDIR/gcr.io/
# k8s-staging-cri-tools/test-image-1, ...), one ref per tag, and images.json,
# every NAME:TAG with its digests and sizes. push.sh copies them to a
# registry under the same names. The userland is Debian's dynamically linked
# busybox plus toybox's pgrep and util-linux's ipcs, fetched once with
# `apt-get download` into $UCRI_IMAGES_CACHE (default OUTDIR/.cache), with the
# host's glibc libraries they need; nginx, pause and nnp are compiled from
# src/ with gcc -static. Tar entries, mtimes, owners and compression are
# fixed, so digests are stable across runs on one host.
# Exit status 3 means a prerequisite is missing (named on stderr).
set -euo pipefail
shopt -s inherit_errexit
umask 022
export LC_ALL=C TZ=UTC

case ${BASH_SOURCE[0]} in */*) HERE=${BASH_SOURCE[0]%/*} ;; *) HERE=. ;; esac
HERE=$(cd "$HERE" && pwd)
SRC=$HERE/src
EPOCH=1700000000
CREATED=2023-11-14T22:13:20Z
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MT_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_INDEX=application/vnd.oci.image.index.v1+json
MT_CONFIG=application/vnd.oci.image.config.v1+json
MT_LAYER_GZ=application/vnd.oci.image.layer.v1.tar+gzip
TAR_OPTS=(--format=posix '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime'
  --numeric-owner --mtime=@"$EPOCH" --no-recursion -b1)
# Every top-level directory this script writes in OUTDIR.
HOSTS=(gcr.io registry.k8s.io k8s.gcr.io docker.io public.ecr.aws quay.io)

log() { printf 'conformance-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
missing() { log "missing prerequisite: $*"; exit 3; }

check_tools() {
  local t libc
  for t in dpkg dpkg-deb jq tar gzip sha256sum ldd gcc awk sed grep cut stat find sort mktemp dirname \
    install ln; do
    command -v "$t" >/dev/null || missing "$t"
  done
  libc=$(gcc -print-file-name=libc.a)
  [ -f "$libc" ] || missing "static glibc for gcc -static (libc.a, package libc6-dev)"
  [ "$(dpkg --print-architecture)" = amd64 ] \
    || die "the images are linux/amd64 and use the host's libraries: this host is $(dpkg --print-architecture)"
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- inputs

# Prints the path of PKG's .deb in CACHE, downloading it first if needed.
fetch_deb() { # PKG CACHE
  local pkg=$1 cache=$2 deb err tmp
  mkdir -p "$cache"
  deb=$(find "$cache" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)
  if [ -z "$deb" ]; then
    command -v apt-get >/dev/null || missing "apt-get (to download $pkg), or ${pkg}_*.deb in $cache"
    tmp=$(mktemp -d "$cache/dl.XXXXXX")
    if ! err=$(cd "$tmp" && apt-get download "$pkg" 2>&1); then
      rm -rf "$tmp"
      missing "$pkg .deb (\`apt-get download $pkg\` failed; run apt-get update?): $err"
    fi
    mv "$tmp"/"${pkg}"_*.deb "$cache"/
    rm -rf "$tmp"
    deb=$(find "$cache" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n1)
  fi
  [ -n "$deb" ] || missing "$pkg .deb in $cache"
  echo "$deb"
}

# Unpacks PKG's .deb under $WORK/deb/PKG; prints that directory.
unpack_deb() { # PKG
  local dir=$WORK/deb/$1 deb
  if [ ! -d "$dir" ]; then
    deb=$(fetch_deb "$1" "$CACHE")
    mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir" || die "dpkg-deb -x $deb"
  fi
  echo "$dir"
}

# Copies every shared library `ldd BIN` names into ROOT at the same path.
copy_libs() { # BIN ROOT
  local bin=$1 root=$2 out lib
  out=$(ldd "$bin" 2>&1) || die "ldd $bin: $out"
  if grep -q 'not found' <<<"$out"; then
    missing "libraries of $bin: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
  fi
  while read -r lib; do
    [ -e "$root$lib" ] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
    chmod 0755 "$root$lib"
  done < <(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$out")
}

# Compiles src/FILE.c statically into OUT (stripped, so the same source and
# compiler give the same bytes).
compile() { # FILE OUT [gcc args...]
  local src=$1 out=$2 err
  shift 2
  if ! err=$(cd "$WORK" && gcc -O2 -Wall -static -s "$@" -o "$out" "$SRC/$src.c" 2>&1); then
    die "gcc $src.c: $err"
  fi
}

# ---------------------------------------------------------------- layers

# Writes $L/NAME.tar from DIR: the entries in LIST (one relative path a line,
# in archive order) owned by 0:0, then those in LIST1000 owned by 1000:1000.
make_tar() { # NAME DIR LIST [LIST1000]
  local name=$1 dir=$2 list=$3 list1000=${4:-}
  tar "${TAR_OPTS[@]}" --owner=0 --group=0 -C "$dir" -T "$list" -cf "$L/$name.tar" \
    || die "tar $name"
  if [ -n "$list1000" ]; then
    tar "${TAR_OPTS[@]}" --owner=1000 --group=1000 -C "$dir" -T "$list1000" -cf "$L/$name.1000.tar" \
      || die "tar $name (uid 1000 part)"
    tar -b1 -A -f "$L/$name.tar" "$L/$name.1000.tar" || die "tar -A $name"
    rm "$L/$name.1000.tar"
  fi
  sha256 "$L/$name.tar" >"$L/$name.diffid"
  gzip -n -6 -c "$L/$name.tar" >"$L/$name.tar.gz"
}

# Sorted relative paths under DIR, one a line (parents before children).
list_tree() { (cd "$1" && find . -mindepth 1 | sed 's,^\./,,' | sort); }

# A layer of everything staged in $WORK/stage/NAME, owned by root.
tree_layer() { # NAME
  list_tree "$WORK/stage/$1" >"$WORK/$1.list"
  make_tar "$1" "$WORK/stage/$1" "$WORK/$1.list"
}

passwd_base() {
  printf '%s\n' \
    'root:x:0:0:root:/root:/bin/sh' \
    'daemon:x:1:1:daemon:/usr/sbin:/bin/false' \
    'bin:x:2:2:bin:/bin:/bin/false' \
    'sys:x:3:3:sys:/dev:/bin/false' \
    'sync:x:4:100:sync:/bin:/bin/sync' \
    'mail:x:8:8:mail:/var/spool/mail:/bin/false' \
    'www-data:x:33:33:www-data:/var/www:/bin/false' \
    'operator:x:37:37:Operator:/var:/bin/false' \
    'nobody:x:65534:65534:nobody:/home:/bin/false'
}

group_base() {
  printf '%s\n' root:x:0: daemon:x:1: bin:x:2: sys:x:3: adm:x:4: tty:x:5: disk:x:6: lp:x:7: \
    mail:x:8: kmem:x:9: wheel:x:10:root cdrom:x:11: dialout:x:18: floppy:x:19: video:x:28: \
    audio:x:29: tape:x:32: www-data:x:33: operator:x:37: utmp:x:43: plugdev:x:46: staff:x:50: \
    lock:x:54: netdev:x:82: users:x:100: nogroup:x:65534:
}

# The busybox userland every image but pause has: Debian's busybox in /bin
# with each applet of `busybox --list` a hard link to it, toybox as
# /usr/bin/pgrep (Debian's busybox has no pgrep applet), util-linux's ipcs as
# /usr/bin/ipcs (no ipcs applet either), the glibc libraries they load, and
# passwd/group files modelled on the busybox image's.
layer_base() {
  local d=$WORK/stage/base bb tb ul name applets
  bb=$(unpack_deb busybox)
  tb=$(unpack_deb toybox)
  ul=$(unpack_deb util-linux)
  mkdir -p "$d/bin" "$d/dev" "$d/etc" "$d/home" "$d/root" "$d/tmp" "$d/usr/bin" "$d/usr/sbin" \
    "$d/var/spool/mail" "$d/var/www"
  install -m 0755 "$bb/bin/busybox" "$d/bin/busybox"
  applets=$("$d/bin/busybox" --list) || die "busybox --list"
  for name in $applets; do
    [ "$name" = busybox ] || ln "$d/bin/busybox" "$d/bin/$name"
  done
  for name in sh ls cat sleep nc wget ip hostname id grep stat ps top pidof touch mount mkdir \
    rmdir dd ping echo brctl netstat date httpd find sort; do
    [ -e "$d/bin/$name" ] || die "Debian's busybox has no $name applet"
  done
  install -m 0755 "$tb/bin/toybox" "$d/usr/bin/toybox"
  ln "$d/usr/bin/toybox" "$d/usr/bin/pgrep"
  install -m 0755 "$ul/usr/bin/ipcs" "$d/usr/bin/ipcs"
  copy_libs "$d/bin/busybox" "$d"
  copy_libs "$d/usr/bin/toybox" "$d"
  copy_libs "$d/usr/bin/ipcs" "$d"
  passwd_base >"$d/etc/passwd"
  group_base >"$d/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'shadow: files' 'hosts: files dns' \
    'networks: files' 'protocols: files' 'services: files' >"$d/etc/nsswitch.conf"
  chmod 1777 "$d/tmp"
  chmod 0700 "$d/root"
  # bin/busybox first, so every applet is a hard link to it.
  { printf 'bin\nbin/busybox\n'; list_tree "$d" | grep -vxE 'bin|bin/busybox'; } >"$WORK/base.list"
  make_tar base "$d" "$WORK/base.list"
}

# One empty file /NAME, the `ADD ${TEST} ${TEST}` of cri-tools'
# images/image-test/Dockerfile.
layer_marker() { # NAME
  local d=$WORK/stage/marker-$1
  mkdir -p "$d"
  : >"$d/$1"
  echo "$1" >"$WORK/marker-$1.list"
  make_tar "marker-$1" "$d" "$WORK/marker-$1.list"
}

# What `adduser -u 1000 -D default-user && addgroup -g 50000
# group-defined-in-image && addgroup default-user group-defined-in-image`
# leaves in cri-tools' images/image-predefined-group.
layer_predefined_group() {
  local d=$WORK/stage/predefined-group
  mkdir -p "$d/etc" "$d/home/default-user"
  { passwd_base; echo 'default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh'; } >"$d/etc/passwd"
  { group_base; echo 'default-user:x:1000:'; echo 'group-defined-in-image:x:50000:default-user'; } \
    >"$d/etc/group"
  printf '%s\n' etc etc/group etc/passwd home >"$WORK/predefined-group.list"
  echo home/default-user >"$WORK/predefined-group.1000.list"
  make_tar predefined-group "$d" "$WORK/predefined-group.list" "$WORK/predefined-group.1000.list"
}

nginx_default_conf() { # PORT
  cat <<EOF
server {
    listen       $1;
    server_name  localhost;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }

    error_page   500 502 503 504  /50x.html;
    location = /50x.html {
        root   /usr/share/nginx/html;
    }
}
EOF
}

# src/nginx.c as /usr/sbin/nginx with nginx's configuration layout.
layer_nginx() {
  local d=$WORK/stage/nginx
  mkdir -p "$d/usr/sbin" "$d/etc/nginx/conf.d" "$d/usr/share/nginx/html" "$d/var/cache/nginx" \
    "$d/var/log/nginx" "$d/var/run"
  compile nginx "$d/usr/sbin/nginx"
  cat >"$d/etc/nginx/nginx.conf" <<'EOF'
# The stand-in /usr/sbin/nginx (packaging/conformance/src/nginx.c) reads only
# `pid` here and `listen` and `root` in conf.d/default.conf.
user  nginx;
worker_processes  1;

error_log  /var/log/nginx/error.log warn;
pid        /var/run/nginx.pid;

events {
    worker_connections  1024;
}

http {
    include /etc/nginx/conf.d/*.conf;
}
EOF
  nginx_default_conf 80 >"$d/etc/nginx/conf.d/default.conf"
  cat >"$d/usr/share/nginx/html/index.html" <<'EOF'
<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>This is ucri's conformance stand-in for nginx (packaging/conformance/src/nginx.c).</p>
</body>
</html>
EOF
  cat >"$d/usr/share/nginx/html/50x.html" <<'EOF'
<!DOCTYPE html>
<html>
<head>
<title>Error</title>
</head>
<body>
<h1>An error occurred.</h1>
</body>
</html>
EOF
  tree_layer nginx
}

# cri-tools' images/hostnet-nginx: default.conf listening on 12003, over an
# nginx image whose entrypoint is /docker-entrypoint.sh.
layer_hostnet() {
  local d=$WORK/stage/hostnet
  mkdir -p "$d/etc/nginx/conf.d" "$d/docker-entrypoint.d"
  install -m 0755 "$SRC/docker-entrypoint.sh" "$d/docker-entrypoint.sh"
  nginx_default_conf 12003 >"$d/etc/nginx/conf.d/default.conf"
  tree_layer hostnet
}

# The httpd image's /usr/local/apache2 with src/httpd (busybox httpd behind
# Apache's start-up notices) as bin/httpd, and its httpd-foreground.
layer_httpd() {
  local d=$WORK/stage/httpd
  mkdir -p "$d/usr/local/apache2/bin" "$d/usr/local/apache2/htdocs" "$d/usr/local/apache2/logs" \
    "$d/usr/local/bin"
  install -m 0755 "$SRC/httpd" "$d/usr/local/apache2/bin/httpd"
  install -m 0755 "$SRC/httpd-foreground" "$d/usr/local/bin/httpd-foreground"
  echo '<html><body><h1>It works!</h1></body></html>' >"$d/usr/local/apache2/htdocs/index.html"
  tree_layer httpd
}

# /usr/local/bin/nnp, setuid root.
layer_nnp() {
  local d=$WORK/stage/nnp
  mkdir -p "$d/usr/local/bin"
  compile nnp "$d/usr/local/bin/nnp"
  chmod 4755 "$d/usr/local/bin/nnp"
  tree_layer nnp
}

# /pause built with -DVERSION=vV-ucri.
layer_pause() { # V
  local d=$WORK/stage/pause-$1
  mkdir -p "$d"
  compile pause "$d/pause" -Os "-DVERSION=v$1-ucri"
  tree_layer "pause-$1"
}

# ---------------------------------------------------------------- blobs and JSON

# Adds FILE to the blob store; prints its descriptor.
put_blob() { # MEDIATYPE FILE
  local hex size
  hex=$(sha256 "$2")
  size=$(stat -c %s "$2")
  [ -e "$STORE/$hex" ] || install -m 0644 "$2" "$STORE/$hex"
  jq -cn --arg mt "$1" --arg d "sha256:$hex" --argjson s "$size" '{mediaType: $mt, digest: $d, size: $s}'
}

put_json() { # MEDIATYPE JSON
  local f; f=$(mktemp "$WORK/json.XXXXXX")
  printf '%s' "$2" >"$f"
  put_blob "$1" "$f"
}

# Descriptor of layer NAME (gzip), with the build-only fields diffId and
# name (the manifest step strips them).
layer() { # NAME
  put_blob "$MT_LAYER_GZ" "$L/$1.tar.gz" | jq -c --arg id "sha256:$(cat "$L/$1.diffid")" --arg n "$1" \
    '. + {diffId: $id, name: $n}'
}

# An image config: CONFIG is the "config" object (User, Env, Entrypoint,
# Cmd, ...); every image also gets the label org.ucri.conformance=ID.
config() { # ID CONFIG
  jq -cn --arg id "$1" --argjson c "$2" --arg created "$CREATED" '{
    created: $created, architecture: "amd64", os: "linux",
    config: ($c + {Labels: (($c.Labels // {}) + {"org.ucri.conformance": $id})})}'
}

# Writes config (CONFIG plus rootfs and history from LAYERS) and manifest to
# the blob store; prints the manifest descriptor and records the summary in
# $WORK/info/HEX.json and the image's blobs in $WORK/info/HEX.blobs.
manifest() { # CONFIG LAYER_NAME...
  local config=$1 n layers cdesc m mdesc hex
  shift
  layers=$(for n in "$@"; do layer "$n"; done | jq -cs .)
  config=$(jq -c --argjson ls "$layers" --arg created "$CREATED" '. + {
    rootfs: {type: "layers", diff_ids: [$ls[].diffId]},
    history: [$ls[] | {created: $created, created_by: ("ucri conformance images: layer " + .name)}]}' \
    <<<"$config")
  cdesc=$(put_json "$MT_CONFIG" "$config")
  m=$(jq -cn --arg mt "$MT_MANIFEST" --argjson c "$cdesc" --argjson ls "$layers" \
    '{schemaVersion: 2, mediaType: $mt, config: $c, layers: [$ls[] | del(.diffId, .name)]}')
  mdesc=$(put_json "$MT_MANIFEST" "$m")
  hex=$(jq -r '.digest | ltrimstr("sha256:")' <<<"$mdesc")
  jq -cn --argjson d "$mdesc" --argjson c "$cdesc" --argjson ls "$layers" \
    '$d + {platform: {architecture: "amd64", os: "linux"}, config: $c.digest, configSize: $c.size,
      layers: [$ls[] | del(.name)], compressedSize: ([$ls[].size] | add)}' >"$WORK/info/$hex.json"
  jq -r --argjson c "$cdesc" --argjson ls "$layers" \
    '[.digest, $c.digest, $ls[].digest][] | ltrimstr("sha256:")' <<<"$mdesc" >"$WORK/info/$hex.blobs"
  echo "$mdesc"
}

# Tags the image MANIFEST_DESC as HOST/REPO:TAG: the OCI layout
# OUTDIR/HOST/REPO gets its blobs (hard links into the store) and a ref TAG.
tag() { # HOST/REPO:TAG MANIFEST_DESC [USED_BY]
  local name=$1 repo=${1%:*} t=${1##*:} desc=$2 used=${3:-} layout hex key b
  layout=$OUT/$repo
  hex=$(jq -r '.digest | ltrimstr("sha256:")' <<<"$desc")
  key=$(printf '%s' "$repo" | sha256sum | cut -c1-16)
  if [ ! -e "$layout/oci-layout" ]; then
    mkdir -p "$layout/blobs/sha256"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    printf '%s %s\n' "$key" "$repo" >>"$WORK/layouts"
  fi
  while read -r b; do
    [ -e "$layout/blobs/sha256/$b" ] || ln "$STORE/$b" "$layout/blobs/sha256/$b" 2>/dev/null \
      || install -m 0644 "$STORE/$b" "$layout/blobs/sha256/$b"
  done <"$WORK/info/$hex.blobs"
  jq -c --arg t "$t" '{mediaType, digest, size} + {annotations: {"org.opencontainers.image.ref.name": $t}}' \
    <<<"$desc" >>"$WORK/refs-$key"
  jq -c --arg n "$name" --arg r "$repo" --arg t "$t" --arg u "$used" \
    '{name: $n, repo: $r, tag: $t, usedBy: $u} + .' "$WORK/info/$hex.json" >>"$WORK/summary"
}

finish_layouts() {
  local key repo
  while read -r key repo; do
    jq -cs --arg mt "$MT_INDEX" '{schemaVersion: 2, mediaType: $mt, manifests: .}' "$WORK/refs-$key" \
      >"$OUT/$repo/index.json"
  done <"$WORK/layouts"
}

# ---------------------------------------------------------------- images

# The busybox image's run settings: `sh`, the default PATH.
busybox_cfg() { # [USER]
  jq -cn --arg path "$PATH_ENV" --arg user "${1:-}" \
    '{Env: [$path], Cmd: ["sh"]} + (if $user == "" then {} else {User: $user} end)'
}

build_busybox() {
  local m v
  m=$(manifest "$(config busybox-e2e-1.29-2 "$(busybox_cfg)")" base)
  tag registry.k8s.io/e2e-test-images/busybox:1.29-2 "$m" \
    "framework default container image (most validation specs, critest -benchmark)"
  m=$(manifest "$(config busybox-1 "$(busybox_cfg)")" base)
  tag docker.io/library/busybox:latest "$m" "not pulled by critest v1.36.0 (kept for short names)"
  tag docker.io/library/busybox:1 "$m" "not pulled by critest v1.36.0 (kept for short names)"
  tag public.ecr.aws/docker/library/busybox:1 "$m" "critest -benchmark: image listing (AfterEach removes it)"
  for v in 1-glibc 1-musl 1-uclibc; do
    m=$(manifest "$(config "busybox-$v" "$(busybox_cfg)")" base)
    tag "public.ecr.aws/docker/library/busybox:$v" "$m" "critest -benchmark: image listing (AfterEach removes it)"
  done
  m=$(manifest "$(config busybox-1.35.0-glibc "$(busybox_cfg)")" base)
  tag public.ecr.aws/docker/library/busybox:1.35.0-glibc "$m" \
    "critest -benchmark: pulled, inspected and removed by the image lifecycle benchmark"
}

build_test_images() {
  local r=gcr.io/k8s-staging-cri-tools n m
  for n in test-image-1 test-image-2 test-image-3; do
    layer_marker "$n"
    m=$(manifest "$(config "$n" "$(busybox_cfg)")" base "marker-$n")
    tag "$r/$n:latest" "$m" "Image Manager: listImage should get exactly 3 image in the result list"
  done
  layer_marker test-image-latest
  m=$(manifest "$(config test-image-latest "$(busybox_cfg)")" base marker-test-image-latest)
  tag "$r/test-image-latest:latest" "$m" "Image Manager: public image without tag should be pulled and removed"
  layer_marker test-image-digest
  m=$(manifest "$(config test-image-digest "$(busybox_cfg)")" base marker-test-image-digest)
  tag "$r/test-image-digest:latest" "$m" \
    "Image Manager: public image with digest (pulls @sha256:9700f9a2..., an upstream digest: cannot match)"
  layer_marker same-image
  m=$(manifest "$(config test-image-tags "$(busybox_cfg)")" base marker-same-image)
  for n in 1 2 3; do
    tag "$r/test-image-tags:$n" "$m" "Image Manager: listImage should get exactly 3 repoTags in the result image"
  done
  layer_marker test
  m=$(manifest "$(config test-image-tag-test "$(busybox_cfg)")" base marker-test)
  tag "$r/test-image-tag:test" "$m" \
    "Image Manager (pull with tag, timeout), Image Consistency, Image Identifier Consistency (default entrypoint)"
  layer_marker all
  m=$(manifest "$(config test-image-tag-all "$(busybox_cfg)")" base marker-all)
  tag "$r/test-image-tag:all" "$m" "Image Manager: image status should support all kinds of references"
}

build_user_images() {
  local r=gcr.io/k8s-staging-cri-tools n u m
  for n in user-uid:1002 user-username:www-data user-uid-group:1003:1004 user-username-group:www-data:1004; do
    u=${n#*:}
    n=test-image-${n%%:*}
    m=$(manifest "$(config "$n" "$(busybox_cfg "$u")")" base)
    tag "$r/$n:latest" "$m" "Image Manager: image status get image fields should not have Uid|Username empty"
  done
  layer_predefined_group
  m=$(manifest "$(config test-image-predefined-group "$(busybox_cfg 1000)")" base predefined-group)
  tag "$r/test-image-predefined-group:latest" "$m" "Security Context: SupplementalGroupsPolicy Merge and Strict"
}

build_nginx() {
  local c m
  layer_nginx
  layer_hostnet
  c=$(jq -cn --arg path "$PATH_ENV" '{Env: [$path, "NGINX_VERSION=1.14.2"],
    Cmd: ["nginx", "-g", "daemon off;"], ExposedPorts: {"80/tcp": {}}, StopSignal: "SIGTERM"}')
  m=$(manifest "$(config nginx-1.14-2 "$c")" base nginx)
  tag registry.k8s.io/e2e-test-images/nginx:1.14-2 "$m" \
    "Networking port mapping, Streaming portforward, Security Context HostPID/PodPID/ContainerPID"
  c=$(jq -cn --arg path "$PATH_ENV" '{Env: [$path], Entrypoint: ["/docker-entrypoint.sh"],
    Cmd: ["nginx", "-g", "daemon off;"], ExposedPorts: {"80/tcp": {}}, StopSignal: "SIGQUIT"}')
  m=$(manifest "$(config hostnet-nginx "$c")" base nginx hostnet)
  tag gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64:latest "$m" \
    "Streaming: runtime should support portforward in host network (port 12003)"
}

build_httpd() {
  local c m
  layer_httpd
  c=$(jq -cn '{Env: ["PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "HTTPD_PREFIX=/usr/local/apache2", "HTTPD_VERSION=2.4.39"],
    Cmd: ["httpd-foreground"], WorkingDir: "/usr/local/apache2", ExposedPorts: {"80/tcp": {}}}')
  m=$(manifest "$(config httpd-2.4.39-4 "$c")" base httpd)
  tag registry.k8s.io/e2e-test-images/httpd:2.4.39-4 "$m" "Multiple Containers: network, container log, exec"
}

build_nonewprivs() {
  local c m
  layer_nnp
  c=$(jq -cn --arg path "$PATH_ENV" '{Env: [$path], Cmd: ["nnp"]}')
  m=$(manifest "$(config nonewprivs-1.3 "$c")" base nnp)
  tag registry.k8s.io/e2e-test-images/nonewprivs:1.3 "$m" "Security Context: NoNewPrivs (true and false)"
}

build_pause() {
  local v c m
  for v in 3.6 3.8 3.9; do
    layer_pause "$v"
    c=$(jq -cn --arg path "$PATH_ENV" '{User: "65535:65535", Env: [$path], Entrypoint: ["/pause"],
      WorkingDir: "/"}')
    m=$(manifest "$(config "pause-$v" "$c")" "pause-$v")
    if [ "$v" = 3.9 ]; then
      tag registry.k8s.io/pause:3.9 "$m" \
        "Image Identifier Consistency: same image from different registries (with k8s.gcr.io/pause:3.9)"
      tag k8s.gcr.io/pause:3.9 "$m" \
        "Image Identifier Consistency: same image from different registries (with registry.k8s.io/pause:3.9)"
    else
      tag "registry.k8s.io/pause:$v" "$m" "not pulled by critest v1.36.0 (older sandbox image tags)"
    fi
  done
}

write_summary() {
  jq -s '{arch: "amd64", images: (reduce .[] as $e ({}; .[$e.name] = $e))}' "$WORK/summary" \
    >"$OUT/images.json"
}

main() {
  local h start=$SECONDS
  [ $# -eq 1 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
  check_tools
  mkdir -p "$1"
  OUT=$(cd "$1" && pwd)
  CACHE=${UCRI_IMAGES_CACHE:-$OUT/.cache}
  WORK=$(mktemp -d "$OUT/.work.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  L=$WORK/layers
  STORE=$WORK/blobs
  mkdir -p "$L" "$STORE" "$WORK/info" "$WORK/stage" "$WORK/deb"
  : >"$WORK/summary"
  : >"$WORK/layouts"
  for h in "${HOSTS[@]}"; do rm -rf "${OUT:?}/$h"; done
  rm -f "$OUT/images.json"
  log "building layers"
  layer_base
  build_busybox
  build_test_images
  build_user_images
  build_nginx
  build_httpd
  build_nonewprivs
  build_pause
  finish_layouts
  write_summary
  log "wrote $(jq '.images | length' "$OUT/images.json") images in $((SECONDS - start)) s; see $OUT/images.json"
}

main "$@"
