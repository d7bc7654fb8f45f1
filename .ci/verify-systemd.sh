#!/usr/bin/env bash
# Checks the systemd units and scripts in systemd/:
#   - `systemd-analyze verify` on every systemd/*.service; FAILS on any output at all, because
#     systemd-analyze only warns (and exits 0) on unknown keys, bad values, misplaced settings, ...;
#   - every /opt/node-admin/... file an Exec*= line names exists in the repo (or, for dist/**/*.js,
#     its TypeScript source does, since dist/ is built and not committed);
#   - `bash -n` on systemd/*.sh and on this script;
#   - prints `systemd-analyze security --offline=yes` exposure levels (informational, never fails).
#
# How the units are verified honestly on a build machine: `systemd-analyze verify` checks that each
# Exec*= binary exists here. The units run /usr/bin/node and /bin/bash (which exist) with the install
# path /opt/node-admin only as an ARGUMENT, so verify would pass them as they are; still, the units are
# verified as temporary copies with /opt/node-admin replaced by this checkout, so that what is checked
# names files that exist. Nothing else is changed. User=/Group=/SupplementaryGroups= naming users that
# do not exist here (node-admin, node-admin-operators) are not reported by verify (they are resolved
# only when the service starts), so no --root or fake passwd is needed.
#
# Usage: bash .ci/verify-systemd.sh            (from anywhere; exit 0 = all good)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo install_prefix=/opt/node-admin
failed=0
fail() { printf 'FAIL: %s\n' "$*" >&2; failed=1; }

command -v systemd-analyze >/dev/null || { echo "FAIL: systemd-analyze not found" >&2; exit 1; }

shopt -s nullglob
units=("$repo"/systemd/*.service)
scripts=("$repo"/systemd/*.sh)
((${#units[@]} > 0)) || { echo "FAIL: no systemd/*.service files in $repo" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. Temporary copies, install path -> checkout. All copies sit in one directory, which verify adds to
#    its unit search path, so references between our units (Before=node-admin-example.service) resolve.
for unit in "${units[@]}"; do
  sed "s|$install_prefix|$repo|g" "$unit" >"$tmp/$(basename "$unit")"
done

# 2. Files named on Exec*= lines (continuation lines included) must exist in the checkout.
for unit in "${units[@]}"; do
  name=$(basename "$unit")
  # Join backslash-continued lines, keep Exec*= lines, split into words, keep /opt/node-admin paths.
  while read -r path; do
    [[ -n $path ]] || continue
    rel=${path#"$install_prefix"/}
    if [[ -e $repo/$rel ]]; then continue; fi
    if [[ $rel == dist/*.js ]]; then
      src=${rel#dist/}
      src=${src%.js}.ts
      [[ -e $repo/$src ]] && continue
      fail "$name: $path: neither $rel (built) nor its source $src exists in the repo"
    else
      fail "$name: $path: $rel does not exist in the repo"
    fi
  done < <(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$unit" \
    | grep -E '^[[:space:]]*Exec[A-Za-z]*=' \
    | tr -s ' \t' '\n\n' \
    | grep -oE "^[-@:+!]*$install_prefix/[^[:space:]]+" \
    | sed -E 's/^[-@:+!]+//' || true)
done

# 3. systemd-analyze verify, one unit at a time so each message is attributed; any output fails.
for unit in "${units[@]}"; do
  name=$(basename "$unit")
  rc=0
  # --man=no: Documentation= uses file:, but do not depend on man pages being installed here.
  out=$(cd "$tmp" && systemd-analyze verify --man=no "./$name" 2>&1) || rc=$?
  if [[ -n $out || $rc -ne 0 ]]; then
    fail "systemd-analyze verify systemd/$name (exit $rc):"
    # Name the repo file, not the temporary copy (line numbers are the same).
    printf '%s\n' "${out//"$tmp"\//systemd/}" >&2
  else
    printf 'ok: systemd-analyze verify systemd/%s\n' "$name"
  fi
done

# 4. Shell syntax.
for script in "${scripts[@]}" "$repo/.ci/verify-systemd.sh"; do
  rel=${script#"$repo"/}
  if out=$(bash -n "$script" 2>&1) && [[ -z $out ]]; then
    printf 'ok: bash -n %s\n' "$rel"
  else
    fail "bash -n $rel:"
    printf '%s\n' "$out" >&2
  fi
done

# 5. Informational: sandbox exposure (0 = fully locked down, 10 = no sandbox). Never fails the check.
for unit in "${units[@]}"; do
  name=$(basename "$unit")
  level=$(cd "$tmp" && systemd-analyze security --offline=yes --no-pager "./$name" 2>&1 | grep -F 'Overall exposure level' || true)
  printf 'info: %s\n' "${level:-systemd/$name: exposure level unavailable}"
done

if ((failed)); then
  echo "verify-systemd: FAILED" >&2
  exit 1
fi
echo "verify-systemd: all units and scripts OK"
