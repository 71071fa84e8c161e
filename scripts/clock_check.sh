#!/usr/bin/env bash
# The tests that read the clock, or data the seed made from it (marked `clock`), run once per date below with the
# clock moved there: every weekday, month ends, a year end, a leap day, a Monday just after midnight (before the weekly
# close at 02:00 UTC) and a Sunday night whose tests run on Monday, in a new month. libfaketime (Debian's faketime
# package) moves the wall clock of pytest, of every process it starts, and of a private PostgreSQL server started
# by it (a throwaway data directory per date), so Python's datetime.now() and SQL's now() move together; the
# monotonic clock stays real (timeouts keep working). Two dates at a time, each with its own server; one line per date,
# in the order below; exit 1 when any date fails (its log is kept).
# Usage: bash scripts/clock_check.sh [PYTEST_ARGS...]   (default: -m "clock and not rig"; needs: apt-get install -y faketime gcc)
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"

libfaketime=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -n 1 || true)
if [ -z "$libfaketime" ] || ! command -v cc > /dev/null; then
    echo "error: the clock check needs libfaketime and a C compiler: apt-get install -y faketime gcc" >&2
    exit 2
fi

dates=(  # UTC
    "2028-01-03 00:01:00"  # Monday just after midnight: last week (across a year end) still takes completions until 02:00
    "2027-05-31 12:00:00"  # Monday, a month end
    "2028-02-29 12:00:00"  # Tuesday, a leap day
    "2027-06-30 12:00:00"  # Wednesday, a month end
    "2027-09-30 12:00:00"  # Thursday, a month end
    "2027-12-31 12:00:00"  # Friday, a year end
    "2027-07-31 12:00:00"  # Saturday, a month end
    "2027-02-28 23:59:57"  # Sunday night: pytest starts then, its tests run on Monday 1 March (setup takes longer than 3 s)
)
# the rigs (standbys, PgBouncer, Patroni) run once, in the suite: a minute or more each, eight times over would
# take CI past its budget, and what they read of the seed's dates the other clock tests cover
[ $# -gt 0 ] || set -- -m "clock and not rig"

work=$(mktemp -d -t langlearn-clock-XXXXXX)
cc -shared -fPIC -O2 -o "$work/monotonic_sleep.so" scripts/monotonic_sleep.c -ldl

# One date's run: its own server (data directory) and log; its line and result in $work/<date>.result.
run_date() {
    local when=$1 run result started offset
    shift
    run="$work/$(date -ud "$when" +%Y%m%dT%H%M)"
    # an offset, not a fixed start: every process (pytest, the commands it runs, the server) reads one moving clock
    offset=$(( $(date -ud "$when" +%s) - $(date +%s) ))
    started=$(date +%s)
    if env -u DATABASE_URL LANGLEARN_DATA_DIR="$run" LD_PRELOAD="$work/monotonic_sleep.so $libfaketime" \
        FAKETIME="$(printf '%+d' "$offset")" FAKETIME_DONT_FAKE_MONOTONIC=1 \
        python -m pytest -q -p no:cacheprovider "$@" > "$run.log" 2>&1; then
        result=pass
    else
        result=FAIL
    fi
    LANGLEARN_DATA_DIR="$run" langlearn server stop > /dev/null 2>&1 || true
    rm -rf "$run"
    printf '%-4s %-9s %s UTC  %4ss  %s\n' "$result" "$(date -ud "$when" +%A)" "$when" "$(( $(date +%s) - started ))" "$(tail -n 1 "$run.log")" > "$run.result"
    if [ "$result" = pass ]; then rm "$run.log"; else echo "     log: $run.log" >> "$run.result"; fi
}

# Two dates at a time (each run is mostly one process waiting on another: two keep both cores busy), in order
failed=0
for (( i = 0; i < ${#dates[@]}; i += 2 )); do
    pair=("${dates[@]:i:2}")
    for when in "${pair[@]}"; do run_date "$when" "$@" & done
    wait
    for when in "${pair[@]}"; do
        result="$work/$(date -ud "$when" +%Y%m%dT%H%M).result"
        if [ -f "$result" ]; then cat "$result"; else echo "FAIL $when UTC: its run ended without a result"; fi
        grep -qs '^pass' "$result" || failed=1
    done
done
if [ "$failed" = 0 ]; then rm -rf "$work"; fi
exit "$failed"
