#!/bin/sh
# Database backups for the fedqi aggregator: pg_dump custom format, one file per run, keep the
# newest $BACKUP_KEEP. With --loop, runs every $BACKUP_INTERVAL_SECONDS (the compose service).
# Restore and re-verify the log: docs/operations.md ("Backups and restores").
set -eu
out_dir=${BACKUP_DIR:-/backups}
keep=${BACKUP_KEEP:-30}
interval=${BACKUP_INTERVAL_SECONDS:-86400}

backup_once() {
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    tmp="$out_dir/.fedqi-$stamp.dump.partial"
    pg_dump --format=custom --file="$tmp"
    mv "$tmp" "$out_dir/fedqi-$stamp.dump"   # only complete dumps get the final name
    ls -1t "$out_dir"/fedqi-*.dump 2>/dev/null | tail -n +$((keep + 1)) | xargs -r rm -f
    echo "backup written: $out_dir/fedqi-$stamp.dump"
}

if [ "${1:-}" = "--loop" ]; then
    while true; do backup_once; sleep "$interval"; done
else
    backup_once
fi
