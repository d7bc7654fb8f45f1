#!/usr/bin/env bash
# Part of `npm test`: makes sure the machine has what the tests run for real, installing from Debian's
# packages when missing (as root, as on CI): OpenStack Swift + s3api and memcached (the S3-compatible
# server test/global-setup-s3.ts starts), systemd-analyze (the unit checks) and curl (socket tests).
set -euo pipefail
need=()
for pair in swift-proxy-server:swift-proxy swift-account-server:swift-account swift-container-server:swift-container \
            swift-object-server:swift-object swift-ring-builder:swift memcached:memcached \
            systemd-analyze:systemd curl:curl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
[ ${#need[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "npm test needs these Debian packages: $pkgs(run: sudo apt-get install -y --no-install-recommends $pkgs)" >&2
  exit 1
fi
echo "installing test dependencies: $pkgs" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >&2
