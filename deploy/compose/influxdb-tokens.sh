#!/bin/sh
# Creates the services' scoped InfluxDB tokens (the influxdb-tokens service runs this
# once InfluxDB is up; it does nothing if the tokens exist):
#   backend.token  write-only on the readings bucket
#   billing.token  read-only on the readings bucket
#   grafana.token  read-only on the readings bucket
# The operator token (INFLUX_TOKEN, from INFLUXDB_OPERATOR_TOKEN) is used only here
# and by the operator. To rotate: delete the token files (or the influxdb-tokens
# volume), run `docker compose up influxdb-tokens`, restart the services, and delete
# the old authorizations with `influx auth delete`.
set -eu

die() {
  echo "influxdb-tokens: $*" >&2
  exit 1
}

: "${INFLUX_HOST:?}" "${INFLUX_TOKEN:?}" "${INFLUX_ORG:?}" "${INFLUXDB_BUCKET:?}" "${TOKEN_DIR:?}"
if [ -s "$TOKEN_DIR/backend.token" ] && [ -s "$TOKEN_DIR/billing.token" ] &&
  [ -s "$TOKEN_DIR/grafana.token" ]; then
  echo "influxdb-tokens: tokens exist in $TOKEN_DIR; nothing to do"
  exit 0
fi

bucket_id=$(influx bucket list --name "$INFLUXDB_BUCKET" --hide-headers | cut -f1)
[ -n "$bucket_id" ] || die "bucket $INFLUXDB_BUCKET not found in org $INFLUX_ORG"

create() { # file description permission-flag
  token=$(influx auth create --description "$2" "$3" "$bucket_id" --json |
    sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
  [ -n "$token" ] || die "no token in the answer for $1"
  # Readable by the services' users in their containers; the volume is mounted only
  # into the services that need it.
  (umask 022 && printf '%s' "$token" >"$TOKEN_DIR/$1.tmp")
  chmod 0444 "$TOKEN_DIR/$1.tmp"
  mv "$TOKEN_DIR/$1.tmp" "$TOKEN_DIR/$1"
  echo "influxdb-tokens: created $1 ($2)"
}

create backend.token "electrocloud backend: write readings" --write-bucket
create billing.token "electrocloud billing: read readings" --read-bucket
create grafana.token "electrocloud grafana: read readings" --read-bucket
