#!/bin/sh
# Add a gateway's broker account, or give an existing one a new password.
#
#   mosquitto/add-gateway.sh PASSWORD_FILE GATEWAY_ID
#
# The gateway id is also the MQTT username: the ACL lets it publish only under
# electrocloud/v1/<GATEWAY_ID>/. The password is taken from $GATEWAY_PASSWORD, or
# generated and printed once on stdout. The broker reads the file again on SIGHUP:
#   docker compose exec mosquitto add-gateway.sh /mosquitto/auth/passwd gw-01
#   docker compose kill -s HUP mosquitto
# Needs mosquitto_passwd (in the mosquitto image; Debian package "mosquitto").
set -eu

die() {
  echo "add-gateway: $*" >&2
  exit 2
}

[ $# -eq 2 ] || die "usage: add-gateway.sh PASSWORD_FILE GATEWAY_ID"
file=$1
gateway=$2

printf '%s' "$gateway" | grep -Eq '^[A-Za-z0-9_-]{1,64}$' ||
  die "gateway id '$gateway' must match ^[A-Za-z0-9_-]{1,64}\$ (it is a topic level)"
[ "$gateway" != "electrocloud-backend" ] ||
  die "'electrocloud-backend' is the backend's user, not a gateway id"
command -v mosquitto_passwd >/dev/null 2>&1 ||
  die "mosquitto_passwd not found (apt-get install mosquitto)"

generated=""
if [ -n "${GATEWAY_PASSWORD:-}" ]; then
  password=$GATEWAY_PASSWORD
else
  # 24 random bytes, base64 without the characters that need quoting in YAML or shells.
  password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
  generated=1
fi
case "$password" in
  CHANGE_ME* | change_me* | changeme* | change-me* | placeholder | "<"*">" | "")
    die "GATEWAY_PASSWORD is a placeholder; set a real password or leave it unset" ;;
esac

if [ -e "$file" ]; then
  owner=$(stat -c '%u:%g' "$file")
else
  (umask 077 && : >"$file")
  owner=""
fi
mosquitto_passwd -b "$file" "$gateway" "$password"
# mosquitto_passwd rewrites the file as whoever runs it; the broker (which drops to its
# own user) must still be able to read it after a reload.
if [ -n "$owner" ] && [ "$(id -u)" = 0 ]; then
  chown "$owner" "$file"
fi
chmod 0600 "$file"

echo "add-gateway: $gateway can now connect (reload the broker with SIGHUP)" >&2
if [ -n "$generated" ]; then
  echo "$password"
fi
