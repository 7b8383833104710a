#!/bin/sh
# imagebuild-launch: the entrypoint of every baked image.
#
# 1. Picks the environment: $IMAGEBUILD_ENV, else the first one the recipe lists.
# 2. Exports that environment's config as variables, and its feature toggles as
#    FEATURE_<NAME>=true|false. A variable already set when the container starts
#    (docker run -e) wins over the baked value.
# 3. Refuses to start, with one line on stderr, when a declared secret is not set.
# 4. Execs the server command it was given (the image's Cmd), so the server is PID 1.
#
# POSIX sh only: images without Python (nginx, java) run it too.
set -eu

dir=${IMAGEBUILD_CONFIG_DIR:-/etc/imagebuild}
me=imagebuild-launch

fail() {
    echo "$me: $*" >&2
    exit 64
}

[ -r "$dir/environments" ] || fail "$dir/environments is missing; this image was not baked by imagebuild"
known=$(tr '\n' ' ' < "$dir/environments")
default=$(head -n 1 "$dir/environments")
env_name=${IMAGEBUILD_ENV:-$default}

case $env_name in
    ''|*/*|.*) fail "IMAGEBUILD_ENV='$env_name' is not an environment name; this image knows: $known" ;;
esac
[ -r "$dir/env/$env_name.sh" ] || fail "unknown environment '$env_name'; set IMAGEBUILD_ENV to one of: $known"

is_set() {
    eval "[ -n \"\${$1+x}\" ]"
}

config() {  # config NAME VALUE
    is_set "$1" || export "$1=$2"
}

feature() {  # feature NAME true|false
    is_set "FEATURE_$1" || export "FEATURE_$1=$2"
}

missing=
secret() {  # secret NAME
    if ! is_set "$1" || eval "[ -z \"\${$1}\" ]"; then
        missing="$missing $1"
    fi
}

. "$dir/env/$env_name.sh"

if [ -n "$missing" ]; then
    fail "environment '$env_name' needs secret(s)$missing; pass them at run time (docker run -e NAME=...)"
fi

export IMAGEBUILD_ENV="$env_name"
[ "$#" -gt 0 ] || fail "no server command given"
exec "$@"
