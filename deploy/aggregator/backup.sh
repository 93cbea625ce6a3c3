#!/bin/sh
# Database backups for the fedqi aggregator: pg_dump custom format, one file per run, keep the
# newest $BACKUP_KEEP. With --loop, runs every $BACKUP_INTERVAL_SECONDS (the compose service).
# Dumps are readable by their owner only (they hold every stored submission and user). A failed
# dump leaves nothing behind and exits non-zero (the compose service then restarts it).
# Restore and re-verify the log: docs/operations.md ("Backups and restores").
set -eu
umask 077
out_dir=${BACKUP_DIR:-/backups}
keep=${BACKUP_KEEP:-30}
interval=${BACKUP_INTERVAL_SECONDS:-86400}
tmp=""
child=""

# A dump cut short (pg_dump failed, or the script was stopped) never stays behind. pg_dump and
# sleep run in the background and are waited for, so that a stop (docker stop: SIGTERM) is
# handled at once rather than when they end.
trap 'rm -f "$tmp"' EXIT
trap '[ -z "$child" ] || kill "$child" 2>/dev/null; exit 143' TERM
trap '[ -z "$child" ] || kill "$child" 2>/dev/null; exit 130' INT

backup_once() {
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    tmp="$out_dir/.fedqi-$stamp.dump.partial"
    pg_dump --format=custom --file="$tmp" &
    child=$!
    if ! wait "$child"; then
        rm -f "$tmp"
        echo "backup FAILED: pg_dump of database ${PGDATABASE:-(default)} on ${PGHOST:-(local socket)} exited non-zero (its error is above); no dump written" >&2
        exit 1
    fi
    child=""
    mv "$tmp" "$out_dir/fedqi-$stamp.dump"   # only complete dumps get the final name
    tmp=""
    ls -1t "$out_dir"/fedqi-*.dump 2>/dev/null | tail -n +$((keep + 1)) | xargs -r rm -f
    echo "backup written: $out_dir/fedqi-$stamp.dump"
}

if [ "${1:-}" = "--loop" ]; then
    while true; do
        backup_once
        sleep "$interval" &
        child=$!
        wait "$child"
        child=""
    done
else
    backup_once
fi
