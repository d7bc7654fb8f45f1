#!/usr/bin/env bash
# Takes a PINNED checkpoint labelled pre-upgrade-<UTC timestamp> of the node's database, whether the
# node runs or not:
#   1. through the running node's admin socket (`node-admin checkpoint create --label L --pin`);
#   2. if that exits 5 (agent unavailable: no socket, nothing listening, busy, shutting down), offline
#      (`node-admin checkpoint create --offline --db ... --checkpoint-dir ...`), which is safe to try:
#      it refuses with exit 4 (DATABASE_LOCKED) while any process has the database open;
#   3. exit 4 from the offline attempt means the node IS running but its socket did not answer (busy,
#      stopping, starting, or we lack permission on the socket): wait and start again from 1, up to
#      ATTEMPTS times.
# Any other failure ends the script with that exit code (non-zero), so a package-manager hook that runs
# it stops the upgrade rather than upgrading without a checkpoint.
#
# Run it as the node's user (node-admin), normally through `systemctl start node-admin-pre-upgrade`:
# an offline checkpoint taken as root would leave root-owned files the node cannot prune.
#
# Settings (environment; defaults are the production layout of node-admin-example.service):
#   NODE_ADMIN         the CLI command line (word-split). Default: /usr/bin/node-admin if it exists,
#                      else "node $INSTALL_DIR/dist/cli/main.cjs"
#   INSTALL_DIR        /opt/node-admin
#   DATA_DIR           /var/lib/node-admin (the node's --data-dir)
#   DB_DIR             $DATA_DIR/db
#   CHECKPOINT_DIR     $DATA_DIR/checkpoints
#   NODE_ADMIN_SOCKET  /run/node-admin/admin.sock (read by the CLI itself)
#   LABEL              pre-upgrade-<UTC timestamp, e.g. 20261122T210045Z>
#   ATTEMPTS           3     RETRY_DELAY  5 (seconds)
#   NODE_ADMIN_ALLOW_ROOT=1  run as root anyway (e.g. a development box where root owns the data)
set -euo pipefail

readonly EXIT_CONFLICT=4 EXIT_UNAVAILABLE=5

INSTALL_DIR=${INSTALL_DIR:-/opt/node-admin}
DATA_DIR=${DATA_DIR:-/var/lib/node-admin}
DB_DIR=${DB_DIR:-$DATA_DIR/db}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-$DATA_DIR/checkpoints}
NODE_ADMIN_SOCKET=${NODE_ADMIN_SOCKET:-/run/node-admin/admin.sock}
export NODE_ADMIN_SOCKET
LABEL=${LABEL:-pre-upgrade-$(date -u +%Y%m%dT%H%M%SZ)}
ATTEMPTS=${ATTEMPTS:-3}
RETRY_DELAY=${RETRY_DELAY:-5}

log() { printf 'node-admin-pre-upgrade: %s\n' "$*" >&2; }
die() { local rc=$1; shift; log "$*"; exit "$rc"; }

if [[ -n ${NODE_ADMIN:-} ]]; then
  read -r -a cli <<<"$NODE_ADMIN"
elif [[ -x /usr/bin/node-admin ]]; then
  cli=(/usr/bin/node-admin)
else
  cli=(node "$INSTALL_DIR/dist/cli/main.cjs")
fi

[[ $ATTEMPTS =~ ^[1-9][0-9]*$ ]] || die 2 "ATTEMPTS must be a positive integer, got '$ATTEMPTS'"
[[ $RETRY_DELAY =~ ^[0-9]+$ ]] || die 2 "RETRY_DELAY must be a whole number of seconds, got '$RETRY_DELAY'"
if [[ $(id -u) -eq 0 && ${NODE_ADMIN_ALLOW_ROOT:-} != 1 ]]; then
  die 2 "refusing to run as root (an offline checkpoint would be owned by root);" \
    "run 'systemctl start node-admin-pre-upgrade' or 'sudo -u node-admin $0', or set NODE_ADMIN_ALLOW_ROOT=1"
fi

for ((attempt = 1; ; attempt++)); do
  rc=0
  "${cli[@]}" checkpoint create --label "$LABEL" --pin || rc=$?
  if ((rc == 0)); then
    log "pinned checkpoint '$LABEL' taken through the running node ($NODE_ADMIN_SOCKET)"
    exit 0
  fi
  # Note: exit 5 can also be a client-side timeout after the agent accepted the request; a retry may
  # then leave two pinned checkpoints with this label. Harmless; unpin/delete the extra one by hand.
  ((rc == EXIT_UNAVAILABLE)) || die "$rc" "checkpoint through the socket failed (exit $rc); no checkpoint taken"

  log "agent unavailable at $NODE_ADMIN_SOCKET (exit $rc); trying an offline checkpoint of $DB_DIR"
  [[ -d $DB_DIR ]] || die 3 "no database at $DB_DIR (set DATA_DIR or DB_DIR); no checkpoint taken"
  rc=0
  "${cli[@]}" checkpoint create --offline --db "$DB_DIR" --checkpoint-dir "$CHECKPOINT_DIR" \
    --label "$LABEL" --pin || rc=$?
  if ((rc == 0)); then
    log "pinned checkpoint '$LABEL' taken offline in $CHECKPOINT_DIR"
    exit 0
  fi
  ((rc == EXIT_CONFLICT)) || die "$rc" "offline checkpoint failed (exit $rc); no checkpoint taken"
  # Locked: a process holds the database, yet its socket did not answer.
  if ((attempt >= ATTEMPTS)); then
    die "$rc" "the database is open by a running process but its admin socket $NODE_ADMIN_SOCKET" \
      "does not answer (after $attempt attempts); is it starting/stopping, or is the socket path wrong?" \
      "No checkpoint taken"
  fi
  log "database is locked by a running node whose socket did not answer; retrying in ${RETRY_DELAY}s" \
    "(attempt $attempt of $ATTEMPTS)"
  sleep "$RETRY_DELAY"
done
