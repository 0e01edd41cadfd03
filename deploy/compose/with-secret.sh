#!/bin/sh
# with-secret.sh VARIABLE FILE COMMAND [ARG...]
# Export VARIABLE with the content of FILE (a token the influxdb-tokens job wrote),
# then run COMMAND. Secrets stay out of the compose file and the process list.
set -eu
[ $# -ge 3 ] || { echo "usage: with-secret.sh VARIABLE FILE COMMAND [ARG...]" >&2; exit 2; }
name=$1
file=$2
shift 2
if [ ! -s "$file" ]; then
  echo "with-secret: $file is missing or empty (did the influxdb-tokens service run?)" >&2
  exit 78
fi
value=$(cat "$file")
export "$name=$value"
exec "$@"
