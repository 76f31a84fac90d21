#!/usr/bin/env bash
# Builds and runs the Go, Java, Python and Node.js example clients against a running callbot-facade.
#
#   bash clients/run-all.sh HOST:PORT
#
# Installs what it needs (Debian packages with apt, Node.js and npm too when missing, Python packages in a
# venv, the Node client's packages with `npm ci` from its lockfile; idempotent), generates code from proto/
# into a work dir (clients/.work, or $CALLBOT_CLIENTS_WORKDIR; never committed), runs each client and ends
# with one line "N passed, M failed" counting the four clients. Exit 0 only if all four pass.
set -uo pipefail
ADDR=${1:?usage: clients/run-all.sh HOST:PORT}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PROTO_ROOT=$ROOT/proto
PROTO=callbot/v1/callbot.proto
W=${CALLBOT_CLIENTS_WORKDIR:-$HERE/.work}
mkdir -p "$W"
W=$(cd "$W" && pwd)

# ---- installs (idempotent) ----------------------------------------------------------------------------
APT_PACKAGES=(
  protobuf-compiler grpc-proto python3-venv
  golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
  golang-google-genproto-dev protoc-gen-go protoc-gen-go-grpc
  default-jdk-headless libgrpc-java libprotobuf-java protobuf-compiler-grpc-java-plugin
  libguava-java libjsr305-java libperfmark-java libnetty-java libgoogle-gson-java
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node.js for the Node client: any node and npm on PATH will do (Debian 12's are 18 and 9); else Debian's.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq || { echo "apt-get update failed"; exit 1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { echo "apt-get install failed"; exit 1; }
fi
if [ ! -x "$W/venv/bin/python" ]; then
  echo "== python3 -m venv $W/venv"
  python3 -m venv "$W/venv" || /usr/bin/python3 -m venv "$W/venv" || { echo "cannot create a venv"; exit 1; }
fi
"$W/venv/bin/pip" install -q --disable-pip-version-check -r "$HERE/python/requirements.txt" \
  || { echo "pip install failed"; exit 1; }
PY=$W/venv/bin/python
PROTOC=/usr/bin/protoc   # Debian's protoc 3.21, matching Debian's protobuf-java and protoc-gen-go
# google/rpc/{status,error_details}.proto for Java, taken from the googleapis-common-protos wheel
GAPI=$W/proto-deps
mkdir -p "$GAPI/google/rpc"
"$PY" - "$GAPI/google/rpc" <<'PYEOF'
import os, shutil, sys
import google.rpc
src = google.rpc.__path__[0]
for f in ("status.proto", "error_details.proto"):
    shutil.copyfile(os.path.join(src, f), os.path.join(sys.argv[1], f))
PYEOF
HEALTH_ROOT=/usr/share/grpc-proto   # grpc/health/v1/health.proto (Debian grpc-proto)

# ---- clients -----------------------------------------------------------------------------------------
python_client() {
  rm -rf "$W/py/gen" && mkdir -p "$W/py/gen"
  "$PY" -m grpc_tools.protoc -I"$PROTO_ROOT" --python_out="$W/py/gen" --pyi_out="$W/py/gen" \
    --grpc_python_out="$W/py/gen" "$PROTO_ROOT/$PROTO"
  PYTHONPATH="$W/py/gen" "$PY" "$HERE/python/client.py" "$ADDR"
}

go_client() {
  # GOPATH mode with Debian's Go libraries in /usr/share/gocode. The generated package lands at its
  # go_package path (github.com/callbot-facade/callbot-facade/gen/go/callbot/v1).
  local gp=$W/go/gopath repo=github.com/callbot-facade/callbot-facade
  rm -rf "$gp" && mkdir -p "$gp/src/$repo/clients/go"
  "$PROTOC" -I"$PROTO_ROOT" --go_out="$gp/src" --go-grpc_out="$gp/src" "$PROTO_ROOT/$PROTO"
  cp "$HERE/go/main.go" "$gp/src/$repo/clients/go/"
  ( cd "$gp/src/$repo/clients/go" && GO111MODULE=off GOPATH="$gp:/usr/share/gocode" GOFLAGS= GOPROXY=off \
      GOCACHE="$W/go/cache" go build -o "$W/go/client" . )
  "$W/go/client" "$ADDR"
}

java_client() {
  local j=/usr/share/java gen=$W/java/gen classes=$W/java/classes
  rm -rf "$gen" "$classes" && mkdir -p "$gen" "$classes"
  "$PROTOC" -I"$PROTO_ROOT" -I"$HEALTH_ROOT" -I"$GAPI" --java_out="$gen" \
    --plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin --grpc-java_out="$gen" \
    "$PROTO_ROOT/$PROTO" grpc/health/v1/health.proto google/rpc/status.proto google/rpc/error_details.proto
  # grpc_java_plugin 1.41 emits @javax.annotation.Generated, gone since JDK 9: strip it.
  find "$gen" -name '*Grpc.java' -exec sed -i '/^@javax\.annotation\.Generated(/,/)$/d' {} +
  local cp_c=$j/grpc-api.jar:$j/grpc-stub.jar:$j/grpc-protobuf.jar:$j/grpc-protobuf-lite.jar:$j/grpc-context.jar
  cp_c=$cp_c:$j/protobuf.jar:$j/guava.jar:$j/jsr305.jar
  javac -encoding UTF-8 -nowarn -d "$classes" -cp "$cp_c" $(find "$gen" "$HERE/java/src" -name '*.java')
  local cp_r=$classes:$cp_c:$j/grpc-core.jar:$j/grpc-netty.jar:$j/perfmark-api.jar:$j/gson.jar n
  for n in buffer codec codec-http codec-http2 codec-socks common handler handler-proxy resolver transport; do
    cp_r=$cp_r:$j/netty-$n.jar
  done
  java -cp "$cp_r" com.callbotfacade.example.CallbotClient "$ADDR"
}

node_client() {
  # @grpc/grpc-js + @grpc/proto-loader, exactly as pinned in clients/node/package-lock.json; the client
  # loads proto/callbot/v1/callbot.proto at run time (no code generation). --ignore-scripts: no package
  # needs its install script (protobufjs's only warns about version schemes of its dependents).
  ( cd "$HERE/node" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error )
  echo "node $(node --version), npm $(npm --version)"
  CALLBOT_PROTO_ROOT="$PROTO_ROOT" node "$HERE/node/client.js" "$ADDR"
}

passed=0; failed=0; failed_names=()
for lang in python go java node; do
  echo "== $lang client -> $ADDR"
  t0=$(date +%s)
  ( set -euo pipefail; "${lang}_client" )
  rc=$?
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1)); echo "== $lang client: PASS ($(( $(date +%s) - t0 )) s)"
  else
    failed=$((failed + 1)); failed_names+=("$lang"); echo "== $lang client: FAIL, exit $rc ($(( $(date +%s) - t0 )) s)"
  fi
done
[ $failed -eq 0 ] || echo "failed clients: ${failed_names[*]}"
echo "${passed} passed, ${failed} failed"
[ $failed -eq 0 ]
