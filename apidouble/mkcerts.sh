#!/bin/sh
# mkcerts.sh DIR [SAN ...] - a throw-away CA and a server certificate for the
# API double, valid for 127.0.0.1, ::1, localhost, the in-cluster names of
# the API Service and every extra SAN given (IP:192.0.2.1, DNS:name, or a
# bare IP / name), so clients verify it against ca.crt.
# Writes DIR/ca.crt DIR/ca.key DIR/server.crt DIR/server.key.  Needs openssl.
set -eu
dir=${1:?usage: mkcerts.sh DIR [SAN ...]}
shift
san="IP:127.0.0.1,IP:::1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
for s in "$@"; do
    case "$s" in
        IP:*|DNS:*) ;;
        *[!0-9.]*) s="DNS:$s" ;;
        *) s="IP:$s" ;;
    esac
    san="$san,$s"
done
mkdir -p "$dir"
cd "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -keyout ca.key -out ca.crt -subj "/CN=hapg-double-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -sha256 \
    -keyout server.key -out server.csr -subj "/CN=kube-apiserver-double" 2>/dev/null
cat > server.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
EXT
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out server.crt -days 3650 -sha256 -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 644 ca.crt server.crt
chmod 600 ca.key server.key
openssl verify -CAfile ca.crt server.crt >/dev/null
