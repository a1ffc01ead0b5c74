#!/usr/bin/env bash
# Installs ucri for the current user: the binary in ~/.local/bin and the
# systemd user unit in ~/.config/systemd/user, then (with --enable) starts it.
#
#   packaging/install.sh [--enable] [--binary PATH]
# Without --binary it builds target/release/ucri first. Run
# `sudo packaging/setup-host.sh` once before (packages, ranges, devices).
set -euo pipefail
cd "$(dirname "$0")/.."
enable=0 binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --enable) enable=1; shift ;;
    --binary) binary=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  cargo build --release --locked -q -p ucri
  binary=target/release/ucri
fi
bin_dir="$HOME/.local/bin"
unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
install -d "$bin_dir" "$unit_dir"
install -m 0755 "$binary" "$bin_dir/ucri"
install -m 0644 packaging/ucri.service "$unit_dir/ucri.service"
echo "installed $bin_dir/ucri and $unit_dir/ucri.service"
"$bin_dir/ucri" info || echo "install.sh: \`ucri info\` lists what the host still needs" >&2
if ! command -v systemctl >/dev/null || ! systemctl --user show-environment >/dev/null 2>&1; then
  echo "no systemd user session here: start it with \`ucri daemon\`"
  exit 0
fi
systemctl --user daemon-reload
if [ "$enable" -eq 1 ]; then
  systemctl --user enable --now ucri.service
  echo "ucri is running; socket: \${XDG_RUNTIME_DIR}/ucri/ucri.sock"
else
  echo "start it with: systemctl --user enable --now ucri.service"
fi
