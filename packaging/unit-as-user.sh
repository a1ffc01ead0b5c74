#!/usr/bin/env bash
# The unit-test tier as an ordinary user: every crate's unit tests
# (`cargo test --lib`), run as USER (default ucri-test, made by
# setup-host.sh --test), not as root. They need no privilege, no daemon and
# no configured host; the few that do are listed below and run in the root
# tier (`cargo test` in packaging/test.sh) only.
#
#   packaging/unit-as-user.sh [USER]      (as root)
#
# The test binaries are built here (as the caller), copied to a directory
# USER can read (a checkout under /root is not), and run there with a home
# and TMPDIR of USER's own. Ends with "unit tier as USER: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
user=${1:-ucri-test}
[ "$(id -u)" -eq 0 ] || { echo "unit-as-user: run as root (it switches to $user)" >&2; exit 2; }
id -u "$user" >/dev/null 2>&1 || { echo "unit-as-user: user $user is missing (packaging/setup-host.sh --test)" >&2; exit 2; }

# Unit tests that need root, each for a reason of its own.
root_only=(
  # joins its own network namespace (setns needs CAP_SYS_ADMIN)
  hostport::tests::tcp_connections_and_udp_flows_are_forwarded_and_the_ports_closed
  # unpacks a layer whose files belong to other uids (chown)
  store::tests::a_stopped_unpack_fails_and_leaves_nothing
)
skips=(--exact)
for t in "${root_only[@]}"; do skips+=(--skip "$t"); done

work=$(mktemp -d /tmp/ucri-unit.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
mkdir "$work/home"
chown "$user:" "$work/home"
chmod 0700 "$work/home"

mapfile -t binaries < <(cargo test --workspace --lib --locked --no-run --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])')
[ "${#binaries[@]}" -gt 0 ] || { echo "unit-as-user: cargo built no unit-test binary" >&2; exit 1; }

passed=0 failed=0 status=0
for binary in "${binaries[@]}"; do
  copy=$work/$(basename "$binary")
  install -m 0755 "$binary" "$copy"
  echo "== $(basename "$binary") as $user"
  set +e
  out=$(cd "$work/home" && setpriv --reuid="$user" --regid="$user" --init-groups \
    env -i HOME="$work/home" TMPDIR="$work/home" PATH=/usr/local/bin:/usr/bin:/bin \
    "$copy" "${skips[@]}" 2>&1)
  rc=$?
  set -e
  printf '%s\n' "$out" | grep -E '^test .* FAILED$|^test result:|panicked' || true
  [ "$rc" -eq 0 ] || status=$rc
  read -r p f < <(printf '%s\n' "$out" | awk '/^test result:/ {
    for (i = 1; i < NF; i++) { if ($(i + 1) ~ /^passed/) p += $i; if ($(i + 1) ~ /^failed/) f += $i }
  } END { print p + 0, f + 0 }')
  passed=$((passed + p)) failed=$((failed + f))
done
echo "unit tier as $user: $passed passed, $failed failed (${#root_only[@]} root-only tests left to the root tier)"
exit "$status"
