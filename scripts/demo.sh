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
trap 'git worktree remove --force "$worktree" >/dev/null 2>&1 || rm -rf "$worktree"; rm -f "$worktree.err"' EXIT
git worktree add --quiet --detach "$worktree" HEAD
app="$worktree/examples/flask-hello"

echo "== bake examples/flask-hello at $(git rev-parse --short HEAD) into $IMAGEBUILD_STORE" >&2
if ! result=$("$IB" bake "$app" --json 2>"$worktree.err"); then
    cat "$worktree.err" >&2
    # Debian's mirror keeps only current versions: when a locked one is gone,
    # refresh the lock in this throwaway worktree, commit it there, and bake that.
    grep -q "imagebuild lock" "$worktree.err" || exit 1
    echo "== the committed lock is stale; refreshing it in the demo worktree" >&2
    "$IB" lock "$app"
    git -C "$worktree" -c user.name=imagebuild-demo -c user.email=demo@localhost \
        commit --quiet -m "demo: refreshed imagebuild.lock" -- "$app/imagebuild.lock"
    result=$("$IB" bake "$app" --json)
fi
rm -f "$worktree.err"
echo "$result"
version=$(printf '%s' "$result" | "$PWD/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["version"])')

for env in dev test prod; do
    echo "== promote $version to $env" >&2
    "$IB" promote "$version" --to "$env" --recipe "$app/imagebuild.yaml"
done

echo "== status" >&2
"$IB" status --recipe "$app/imagebuild.yaml"
