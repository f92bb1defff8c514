#!/usr/bin/env bash
# Makes a self-signed certificate and key for development and tests: never for production.
#
#   scripts/devcert.sh [DIR] [NAME...]    writes DIR/cert.pem and DIR/key.pem (DIR: ./certs)
#
# The certificate is an ECDSA P-256 one, valid 30 days, for the names given (default:
# localhost and 127.0.0.1), with the subjectAltName entries that clients check. The key is
# written mode 0600. Run dealwire with:
#
#   dealwire --tls-cert DIR/cert.pem --tls-key DIR/key.pem
#
# and point clients at wss://localhost:8000/ws/events, trusting DIR/cert.pem.
set -euo pipefail

dir=${1:-certs}
shift || true
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(localhost 127.0.0.1)

san=""
for n in "${names[@]}"; do
    if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then
        san+="${san:+,}IP:$n"
    else
        san+="${san:+,}DNS:$n"
    fi
done

mkdir -p "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=${names[0]}" -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
chmod 0644 "$dir/cert.pem"
echo "devcert: wrote $dir/cert.pem and $dir/key.pem (self-signed, 30 days, $san)"
