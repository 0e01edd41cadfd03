#!/bin/sh
# A private CA and certificates for the broker's TLS listener (8883) and for gateways
# (mutual TLS), for tests and small deployments. Needs openssl.
#
#   mosquitto/make-certs.sh DIR server HOSTNAME_OR_IP...  # DIR/server.crt, server.key
#   mosquitto/make-certs.sh DIR client NAME                # DIR/NAME.crt, NAME.key
#
# The CA (DIR/ca.crt, DIR/ca.key) is created on first use. Copy ca.crt to every
# gateway; keep ca.key offline: whoever has it can mint certificates the broker trusts.
# Keys are ECDSA P-256. Server and client certificates are valid for $CERT_DAYS days
# (default 825), the CA for $CA_DAYS (default 3650).
set -eu

die() {
  echo "make-certs: $*" >&2
  exit 2
}

[ $# -ge 3 ] || die "usage: make-certs.sh DIR server NAME... | make-certs.sh DIR client NAME"
dir=$1
kind=$2
shift 2
command -v openssl >/dev/null 2>&1 || die "openssl not found"
CERT_DAYS=${CERT_DAYS:-825}
CA_DAYS=${CA_DAYS:-3650}
mkdir -p "$dir"
umask 077

new_key() { # path
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

if [ ! -e "$dir/ca.crt" ]; then
  new_key "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days "$CA_DAYS" \
    -subj "/O=ElectroCloud/CN=ElectroCloud private CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.crt"
  chmod 0644 "$dir/ca.crt"
  echo "make-certs: created CA $dir/ca.crt" >&2
fi

sign() { # name subject extensions-file
  new_key "$dir/$1.key"
  openssl req -new -key "$dir/$1.key" -subj "$2" -out "$dir/$1.csr"
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -sha256 -days "$CERT_DAYS" -extfile "$3" -out "$dir/$1.crt" 2>/dev/null
  rm -f "$dir/$1.csr" "$3"
  chmod 0644 "$dir/$1.crt"
  echo "make-certs: created $dir/$1.crt and $dir/$1.key" >&2
}

extensions=$(mktemp)
case "$kind" in
  server)
    san=""
    for name in "$@"; do
      case "$name" in
        *[!0-9.:a-fA-F]* | "") entry="DNS:$name" ;;
        *) entry="IP:$name" ;;
      esac
      san="${san:+$san,}$entry"
    done
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" "subjectAltName=$san" >"$extensions"
    sign server "/O=ElectroCloud/CN=$1" "$extensions"
    ;;
  client)
    [ $# -eq 1 ] || die "client takes one name (the gateway id)"
    printf '%s' "$1" | grep -Eq '^[A-Za-z0-9_-]{1,64}$' ||
      die "client name '$1' must match ^[A-Za-z0-9_-]{1,64}\$"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=clientAuth" >"$extensions"
    sign "$1" "/O=ElectroCloud/CN=$1" "$extensions"
    ;;
  *)
    rm -f "$extensions"
    die "unknown kind '$kind': server or client"
    ;;
esac
