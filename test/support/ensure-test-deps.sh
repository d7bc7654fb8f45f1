#!/usr/bin/env bash
# Part of `npm test`: makes sure the machine has what the tests run for real, installing from Debian's
# packages when missing (as root, as on CI): OpenStack Swift + s3api and memcached (the S3-compatible
# server test/global-setup-s3.ts starts), systemd-analyze (the unit checks), curl (socket tests) and
# Prometheus with promtool (the monitoring tests start their own server on a free loopback port), and
# where /dev/fuse exists, python3-fusepy for /usr/bin/python3 (the power-cut filesystem,
# test/support/powercut-fs/; as root it mounts through libfuse2 without fusermount).
set -euo pipefail
need=()
for pair in swift-proxy-server:swift-proxy swift-account-server:swift-account swift-container-server:swift-container \
            swift-object-server:swift-object swift-ring-builder:swift memcached:memcached \
            systemd-analyze:systemd curl:curl prometheus:prometheus promtool:prometheus; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
if [ -e /dev/fuse ] && ! { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import fusepy' 2>/dev/null; }; then
  need+=(python3-fusepy)
fi
[ ${#need[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "npm test needs these Debian packages: $pkgs(run: sudo apt-get install -y --no-install-recommends $pkgs)" >&2
  exit 1
fi
echo "installing test dependencies: $pkgs" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
case " $pkgs" in
  *" prometheus "*)
    # Debian's prometheus postinst enables a system service and starts it (listening on :9090 with
    # /var/lib/prometheus). The tests need only the binaries: keep the postinst from starting it (a
    # policy-rc.d that denies starts, unless the machine already has one), then disable the service.
    pkgs=${pkgs/prometheus /}
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      guard=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\n# node-admin ensure-test-deps.sh: no service starts while installing prometheus\nexit 101\n' >"$guard"
      chmod 0755 "$guard"
      trap 'rm -f "$guard"' EXIT
    fi
    apt-get install -y -qq --no-install-recommends prometheus >&2
    if [ -n "$guard" ]; then rm -f "$guard"; trap - EXIT; fi
    if [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus.service >&2 || true
    else
      deb-systemd-helper disable prometheus.service >/dev/null 2>&1 || true
      update-rc.d prometheus disable >/dev/null 2>&1 || true
      [ -e /run/prometheus/prometheus.pid ] && { /etc/init.d/prometheus stop >&2 || true; }
    fi
    ;;
esac
# shellcheck disable=SC2086
[ -n "${pkgs// /}" ] && apt-get install -y -qq --no-install-recommends $pkgs >&2
exit 0
