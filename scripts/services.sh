#!/usr/bin/env bash
# Starts, on loopback only, the services the tests talk to, unless they
# already answer: a Docker engine and a CNCF distribution registry.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${IMAGEBUILD_SERVICES_DIR:-/tmp/imagebuild-services}
mkdir -p "$STATE"

wait_for() {  # wait_for DESCRIPTION SECONDS COMMAND...
    local what=$1 seconds=$2; shift 2
    for _ in $(seq 1 $((seconds * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "services: $what did not come up; see $STATE" >&2
    return 1
}

docker_answers() { docker version --format '{{.Server.Version}}'; }
if ! docker_answers >/dev/null 2>&1; then
    echo "services: starting dockerd" >&2
    # No TCP listener: the engine is reachable only through its local socket.
    setsid dockerd --host unix:///var/run/docker.sock >"$STATE/dockerd.log" 2>&1 < /dev/null &
    wait_for dockerd 60 docker_answers
fi

REGISTRY_ADDR=${IMAGEBUILD_TEST_REGISTRY:-127.0.0.1:5000}
registry_answers() { curl -fsS "http://$REGISTRY_ADDR/v2/"; }
if ! registry_answers >/dev/null 2>&1; then
    echo "services: starting docker-registry on $REGISTRY_ADDR" >&2
    mkdir -p "$STATE/registry"
    sed -e "s#@ROOT@#$STATE/registry#" -e "s#@ADDR@#$REGISTRY_ADDR#" tests/services/registry.yml > "$STATE/registry.yml"
    setsid docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 < /dev/null &
    wait_for docker-registry 30 registry_answers
fi
