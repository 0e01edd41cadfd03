#!/bin/sh
# Container start of the ElectroCloud broker: write the backend's account (and the demo
# gateway's, if enabled) into the password file from the environment, then run
# mosquitto. Gateways added with add-gateway.sh stay in the file across restarts.
set -eu

PASSWORD_FILE=/mosquitto/auth/passwd

refuse_placeholder() { # name value
  case "$2" in
    "" | CHANGE_ME* | change_me* | changeme* | change-me* | placeholder | "<"*">")
      echo "mosquitto: $1 is unset or a placeholder; set a real password in .env" >&2
      exit 78 ;;
  esac
}

refuse_placeholder MQTT_BACKEND_PASSWORD "${MQTT_BACKEND_PASSWORD:-}"
[ -e "$PASSWORD_FILE" ] || (umask 077 && : >"$PASSWORD_FILE")
mosquitto_passwd -b "$PASSWORD_FILE" electrocloud-backend "$MQTT_BACKEND_PASSWORD"
# The demo gateway (docker compose --profile demo) is written when it has a password.
if [ -n "${MQTT_DEMO_GATEWAY_PASSWORD:-}" ]; then
  refuse_placeholder MQTT_DEMO_GATEWAY_PASSWORD "$MQTT_DEMO_GATEWAY_PASSWORD"
  GATEWAY_PASSWORD=$MQTT_DEMO_GATEWAY_PASSWORD \
    sh /mosquitto/scripts/add-gateway.sh "$PASSWORD_FILE" "${MQTT_DEMO_GATEWAY:?}" >/dev/null
fi
# mosquitto drops to its own user and must read the file (and nobody else).
chown mosquitto:mosquitto "$PASSWORD_FILE"
chmod 0600 "$PASSWORD_FILE"

exec /docker-entrypoint.sh "$@"
