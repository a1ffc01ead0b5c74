#!/usr/bin/env bash
# Builds a tiny OCI image layout, localhost/ucri-demo:latest, from Debian's
# busybox-static, offline: one layer with /bin/busybox and its applets.
#
#   packaging/demo-image.sh OUTDIR       (OUTDIR is created; import it with
#                                         `ucri ctl import OUTDIR`)
set -euo pipefail
OUT=${1:?usage: demo-image.sh OUTDIR}
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || { echo "demo-image: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

root=$WORK/rootfs
mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root,www}
cp "$BUSYBOX" "$root/bin/busybox"
for applet in sh echo cat ls id hostname sleep httpd wget ps grep uname date env; do
  ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"

mkdir -p "$OUT/blobs/sha256"
# Stores a file as a blob; prints "DIGEST SIZE".
blob() {
  local d; d=$(sha256sum "$1" | cut -d' ' -f1)
  cp "$1" "$OUT/blobs/sha256/$d"
  echo "sha256:$d $(stat -c %s "$1")"
}
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$WORK/layer.tar" .
diff_id=sha256:$(sha256sum "$WORK/layer.tar" | cut -d' ' -f1)
gzip -n -c "$WORK/layer.tar" >"$WORK/layer.tar.gz"
read -r layer layer_size < <(blob "$WORK/layer.tar.gz")
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
  "$arch" "$diff_id" >"$WORK/config.json"
read -r config config_size < <(blob "$WORK/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
  "$config" "$config_size" "$layer" "$layer_size" >"$WORK/manifest.json"
read -r manifest manifest_size < <(blob "$WORK/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"localhost/ucri-demo:latest"}}]}' \
  "$manifest" "$manifest_size" >"$OUT/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$OUT/oci-layout"
echo "$OUT: localhost/ucri-demo:latest ($manifest)"
