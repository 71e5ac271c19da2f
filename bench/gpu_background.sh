#!/usr/bin/env bash
# A job longer than one GPU call: started in its own session by the first call (it goes on between calls while
# the lent machine is held), then each call waits for it up to WAIT seconds (default 560) and packs what it has
# written so far. The same command in the next call waits for the same job; once it has finished, a call packs
# its outputs and returns at once.
#   bash bench/gpu_background.sh NAME JOBDIR OUTDIR -- COMMAND ...
# JOBDIR: where the job writes what should come back (packed as OUTDIR/NAME.tgz, parts of 12 MB where larger);
# OUTDIR also gets NAME.log (the job's output) and NAME.rc once it has ended.
set -uo pipefail
NAME=$1; JOB=$2; OUT=$3; shift 3; [ "${1:-}" = "--" ] && shift
WAIT=${WAIT:-560}
mkdir -p "$JOB" "$OUT"
PIDF=/tmp/bg_$NAME.pid RC=/tmp/bg_$NAME.rc LOG=/tmp/bg_$NAME.log
if [ -f "$RC" ]; then
  echo "$NAME: had ended (rc $(cat "$RC"))"
elif [ -f "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null; then
  echo "$NAME: still running (started by an earlier call)"
else
  setsid bash -c '"$@" > "'"$LOG"'" 2>&1; echo $? > "'"$RC"'"' bash "$@" < /dev/null > /dev/null 2>&1 &
  echo $! > "$PIDF"; echo "$NAME: started"
fi
end=$(( $(date +%s) + WAIT ))
while [ ! -f "$RC" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 2; done
cp "$LOG" "$OUT/$NAME.log" 2>/dev/null; [ -f "$RC" ] && cp "$RC" "$OUT/$NAME.rc"
tar czf "/tmp/bg_$NAME.tgz" -C "$JOB" . && split -b 12M -d "/tmp/bg_$NAME.tgz" "$OUT/$NAME.tgz.part"
echo "$NAME: $( [ -f "$RC" ] && echo "ended rc $(cat "$RC")" || echo running)"
