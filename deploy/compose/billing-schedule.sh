#!/bin/sh
# The billing service's schedule: runs `electrocloud $BILLING_ARGS` once a day at
# BILLING_HOUR_UTC (and once at start), and touches a heartbeat file the compose
# healthcheck reads. A failed run is logged and retried every 10 minutes.
set -u
HEARTBEAT=${BILLING_HEARTBEAT:-/var/lib/electrocloud/billing.heartbeat}
HOUR=${BILLING_HOUR_UTC:-02}
: "${BILLING_ARGS:?set BILLING_ARGS, e.g. bill --period previous --all --store influxdb:URL ...}"

last_day=""
run_due=1
while :; do
  touch "$HEARTBEAT"
  today=$(date -u +%F)
  if [ "$(date -u +%H)" = "$HOUR" ] && [ "$today" != "$last_day" ]; then
    run_due=1
  fi
  if [ "$run_due" = 1 ]; then
    # shellcheck disable=SC2086 # BILLING_ARGS is a word list on purpose
    if electrocloud $BILLING_ARGS; then
      last_day=$today
      run_due=0
    else
      echo "billing-schedule: billing failed; retrying in 10 minutes" >&2
    fi
  fi
  sleep 600 &
  wait $!
done
