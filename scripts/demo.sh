#!/usr/bin/env bash
# The main job on the embedded default (the local store, no registry):
# bake examples/flask-hello at the current commit, promote it dev → test → prod,
# and show each environment's status.
set -euo pipefail
cd "$(dirname "$0")/.."
IB=$PWD/.venv/bin/imagebuild
export IMAGEBUILD_STORE=${IMAGEBUILD_STORE:-$HOME/.cache/imagebuild/store}

# Bake the committed state even when this clone has local edits: a detached
# worktree of HEAD is clean by construction.
worktree=$(mktemp -d /tmp/imagebuild-demo.XXXXXX)
trap 'git worktree remove --force "$worktree" >/dev/null 2>&1 || rm -rf "$worktree"' EXIT
git worktree add --quiet --detach "$worktree" HEAD
app="$worktree/examples/flask-hello"

echo "== bake examples/flask-hello at $(git rev-parse --short HEAD) into $IMAGEBUILD_STORE" >&2
result=$("$IB" bake "$app" --json)
echo "$result"
version=$(printf '%s' "$result" | "$PWD/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["version"])')

for env in dev test prod; do
    echo "== promote $version to $env" >&2
    "$IB" promote "$version" --to "$env" --recipe "$app/imagebuild.yaml"
done

echo "== status" >&2
"$IB" status --recipe "$app/imagebuild.yaml"
