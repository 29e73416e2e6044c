#!/usr/bin/env bash
# Makes TLS material for trying Chronik Ingest's SSL listener, and for its
# tests, with the openssl command-line tool:
#   ca.crt / ca.key          a private certificate authority
#   server.crt / server.key  a server certificate for localhost, 127.0.0.1
#                            and ::1, signed by that CA
#   client.crt / client.key  a client certificate (mutual TLS), signed by it
#
# Usage: scripts/gen-certs.sh [OUT_DIR]        (default: ./certs)
# Environment:
#   DAYS=825              validity of every certificate (negative: already
#                         expired, for testing refusals)
#   KEY_TYPE=rsa|ec       RSA 2048 (default) or ECDSA P-256 keys
#   CA_CN="Chronik Ingest test CA"   the CA's common name (give a second CA
#                         another one: clients and servers tell CAs apart by name)
#   SERVER_CN=localhost   the server certificate's common name
#   CLIENT_CN=chronik-client
#   CLIENT_DAYS=$DAYS     validity of the client certificate alone
# An existing ca.crt/ca.key in OUT_DIR is reused, so running it again (say,
# with CLIENT_CN=alice) issues more certificates from the same CA. Keys are
# written PKCS#8 and readable by the owner only.
#
# Then, for example:
#   TLS_CERT_PATH=certs/server.crt TLS_KEY_PATH=certs/server.key \
#   LISTENERS=PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093 cargo run --release
#   kcat -b 127.0.0.1:9093 -X security.protocol=ssl -X ssl.ca.location=certs/ca.crt -L
set -euo pipefail

out=${1:-certs}
days=${DAYS:-825}
key_type=${KEY_TYPE:-rsa}
server_cn=${SERVER_CN:-localhost}
client_cn=${CLIENT_CN:-chronik-client}
client_days=${CLIENT_DAYS:-$days}
ca_cn=${CA_CN:-Chronik Ingest test CA}

if ! command -v openssl >/dev/null; then
    echo "gen-certs.sh: openssl not found (Debian/Ubuntu: apt-get install openssl)" >&2
    exit 1
fi
case "$key_type" in
    rsa) newkey=(-newkey rsa:2048) ;;
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    *) echo "gen-certs.sh: KEY_TYPE must be rsa or ec, not $key_type" >&2; exit 2 ;;
esac

mkdir -p "$out"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -f "$out/ca.crt" ] || [ ! -f "$out/ca.key" ]; then
    openssl req -x509 "${newkey[@]}" -nodes -sha256 -days "${days#-}" \
        -subj "/O=Chronik Ingest test/CN=$ca_cn" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
fi

# issue NAME CN DAYS EXTENSIONS: a key and a CA-signed certificate.
issue() {
    local name=$1 cn=$2 valid=$3 ext=$4
    openssl req "${newkey[@]}" -nodes -sha256 -subj "/O=Chronik Ingest test/CN=$cn" \
        -keyout "$out/$name.key" -out "$work/$name.csr" 2>/dev/null
    printf '%s\n' "$ext" >"$work/$name.ext"
    openssl x509 -req -sha256 -in "$work/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$valid" \
        -extfile "$work/$name.ext" -out "$out/$name.crt" 2>/dev/null
}

issue server "$server_cn" "$days" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:$server_cn,IP:127.0.0.1,IP:::1"

issue client "$client_cn" "$client_days" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
subjectAltName=DNS:$client_cn"

chmod 644 "$out/ca.crt" "$out/server.crt" "$out/client.crt"
echo "gen-certs.sh: wrote $out/{ca,server,client}.{crt,key} ($key_type keys, server CN=$server_cn, client CN=$client_cn)"
