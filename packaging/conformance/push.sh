#!/usr/bin/env bash
# Pushes the stand-in images that images.sh built to a registry, each under
# its upstream name: HOST/REPO:TAG goes to REGISTRY/HOST/REPO:TAG, which a
# registries.conf from registries-conf.sh REGISTRY maps back to HOST/REPO:TAG.
#
#   packaging/conformance/push.sh OUTDIR REGISTRY      (REGISTRY: 127.0.0.1:5000)
#
# Uses `skopeo copy --preserve-digests --dest-tls-verify=false` (plain HTTP
# or unverified TLS) and checks that the registry serves each tag with the
# digest images.json records. Exit status 3 means a prerequisite is missing.
set -euo pipefail
export LC_ALL=C

log() { printf 'conformance-push: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
missing() { log "missing prerequisite: $*"; exit 3; }

[ $# -eq 2 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
OUT=$1
REGISTRY=$2
for t in skopeo jq; do command -v "$t" >/dev/null || missing "$t"; done
[ -f "$OUT/images.json" ] || missing "$OUT/images.json (run images.sh $OUT first)"
case "$REGISTRY" in
  */* | *://* | '') die "REGISTRY must be HOST[:PORT], not $REGISTRY" ;;
esac
OUT=$(cd "$OUT" && pwd)

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# The host's registries.conf has no say in where these go.
: >"$TMP/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$TMP/registries.conf

n=0
start=$SECONDS
while IFS=$'\t' read -r name repo tag digest; do
  dest=$REGISTRY/$repo:$tag
  skopeo --insecure-policy copy --quiet --retry-times 2 --preserve-digests --dest-tls-verify=false \
    "oci:$OUT/$repo:$tag" "docker://$dest" || die "skopeo copy $name to $dest failed"
  got=$(skopeo --insecure-policy inspect --tls-verify=false --raw "docker://$dest" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$digest" ] || die "$dest is sha256:$got, expected $digest"
  n=$((n + 1))
done < <(jq -r '.images[] | [.name, .repo, .tag, .digest] | @tsv' "$OUT/images.json")
log "pushed $n images to $REGISTRY in $((SECONDS - start)) s"
