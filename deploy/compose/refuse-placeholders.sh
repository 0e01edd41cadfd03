#!/bin/sh
# refuse-placeholders.sh VARIABLE... -- COMMAND [ARG...]
# Refuse to start COMMAND while any named variable is unset, empty or still a
# placeholder from .env.example (CHANGE_ME, changeme, <...>, placeholder). For the
# third-party services; ElectroCloud's own services check their secrets themselves
# (electrocloud/secrets.py).
set -eu
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  eval "value=\${$1:-}"
  case "$value" in
    "" | CHANGE_ME* | change_me* | changeme* | change-me* | placeholder | "<"*">")
      echo "refusing to start: $1 is unset or a placeholder; set a real value in .env" >&2
      exit 78 ;;
  esac
  shift
done
[ "${1:-}" = "--" ] || { echo "usage: refuse-placeholders.sh VARIABLE... -- COMMAND" >&2; exit 2; }
shift
exec "$@"
