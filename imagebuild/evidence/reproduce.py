"""Independent reproduction: rebake the commit an image's provenance names, and attest a match.

The source commit comes from the image's verified provenance, never from the caller. It is checked out
clean beside the local repository (`git worktree add --detach`, so the `origin` and the tags `git
describe` reads are the same), and baked into a fresh temporary store: no layer comes from a cache the
original bake could have filled. Only when the rebuilt digest equals the image's is a DSSE-signed in-toto
statement attached to the image (artifact type `application/vnd.imagebuild.reproduced.v1+json`),
recording the rebuilder's key id, where it ran, when, the commit and the digest. A mismatch attaches
nothing and is a build failure (exit 3) naming both digests.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from imagebuild.errors import BuildError, EvidenceError, UserError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest
from imagebuild.registry.client import ManifestBytes
from imagebuild.stores.attachments import Attachment, attach
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.place import ImagePlace

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://imagebuild.dev/attestations/reproduced/v1"
ANNOTATION_CREATED = "org.opencontainers.image.created"
_COMMIT = frozenset("0123456789abcdef")


@dataclass
class Reproduction:
    reference: str
    digest: Digest                  # the image's
    rebuilt: Digest                 # what the rebuild gave (the same, or the error said otherwise)
    commit: str
    key_id: str
    runner: str
    time: str
    attestation: Digest             # the attached attestation's manifest

    def to_dict(self) -> dict:
        return asdict(self)


def reproduce(place: ImagePlace, manifest: ManifestBytes, reference: str, *, repository: Path,
              recipe_path: str, key: Any, provenance_keys: Sequence[Any],
              fresh_store: Callable[[Path], LayoutStore] | None = None,
              now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
              say: Callable[[str], None] | None = None) -> Reproduction:
    """Rebake the commit `manifest`'s provenance names from the git repository at `repository` (the recipe
    where the provenance says, else at `recipe_path` within it) and attach a signed attestation when the
    digests match."""
    from imagebuild.evidence.provenance import read_provenance, source_of

    statement = read_provenance(place, str(manifest.digest), list(provenance_keys))
    commit = (source_of(statement).get("digest") or {}).get("gitCommit")
    if not isinstance(commit, str) or not _is_commit(commit):
        raise EvidenceError(f"the provenance of {manifest.digest.short} names no source commit",
                            hint="reproduce images whose provenance `imagebuild` wrote")
    if say is not None:
        say(f"rebaking commit {commit[:12]}, the source of {reference} ({manifest.digest.short}), in a fresh store")
    return reproduce_commit(place, manifest, reference, commit, repository=repository,
                            recipe_path=recipe_of(statement) or recipe_path, key=key, fresh_store=fresh_store, now=now)


def reproduce_commit(place: ImagePlace, manifest: ManifestBytes, reference: str, commit: str, *, repository: Path,
                     recipe_path: str, key: Any, fresh_store: Callable[[Path], LayoutStore] | None = None,
                     now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> Reproduction:
    """Rebake `commit` and attest `manifest` when the digests match: `reproduce` once the commit is known."""
    from imagebuild.evidence.keys import key_id

    rebuilt = rebake(repository, commit, recipe_path, fresh_store)
    if rebuilt != manifest.digest:
        raise BuildError(f"not reproduced: commit {commit[:12]} rebuilt in a fresh store gives {rebuilt}, "
                         f"but {reference} is {manifest.digest}; nothing attached",
                         hint="compare the two bakes' layers (`imagebuild bake --json`) to find what differs")
    rebuilder = key_id(key)
    moment = now().astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    from imagebuild.evidence.provenance import runner_of

    # The CI job's address when there is one, else the runner's (or this host's) name.
    _, name, job = runner_of(os.environ)
    runner = job or name
    payload = canonical_json(statement_for(reference, manifest.digest, commit, rebuilder, runner, moment))
    from imagebuild.evidence.dsse import sign_envelope

    envelope = sign_envelope(payload, mt.IN_TOTO, key)
    attached = attach(place, manifest, mt.IMAGEBUILD_REPRODUCED, envelope, mt.DSSE_ENVELOPE,
                      {ANNOTATION_CREATED: moment})
    return Reproduction(reference=reference, digest=manifest.digest, rebuilt=rebuilt, commit=commit,
                        key_id=rebuilder, runner=runner, time=moment, attestation=attached.digest)


def recipe_of(statement: dict) -> str | None:
    """The recipe's path in the repository, as the provenance's `recipe` dependency names it."""
    try:
        deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        found = [d["uri"] for d in deps if isinstance(d, dict) and d.get("name") == "recipe"]
    except (KeyError, TypeError):
        return None
    path = found[0] if found and isinstance(found[0], str) else None
    # A path inside the checkout only: the provenance is signed, but not necessarily by this repository's owner.
    if path is None or path.startswith("/") or ".." in Path(path).parts:
        return None
    return path


def statement_for(reference: str, digest: Digest, commit: str, rebuilder: str, runner: str, moment: str) -> dict:
    """The in-toto statement a reproduction signs."""
    name = reference.rpartition("@")[0] or reference
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {digest.algorithm: digest.hex}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"digest": str(digest), "commit": commit, "rebuilder": {"keyid": rebuilder, "runner": runner},
                      "time": moment},
    }


def reproduced_by(found: Sequence[Attachment], digest: str, keys: Sequence[Any]) -> set[str]:
    """The ids of the keys in `keys` that signed a reproduction attestation of `digest` among `found`.
    Attestations by other keys, of another digest, or not well formed count for nothing."""
    from imagebuild.evidence.dsse import open_envelope

    by: set[str] = set()
    for attachment in found:
        if attachment.artifact_type != mt.IMAGEBUILD_REPRODUCED or not keys:
            continue
        try:
            payload_type, payload, signer = open_envelope(attachment.payload, list(keys))
        except EvidenceError:
            continue
        if payload_type == mt.IN_TOTO and _attests(payload, digest):
            by.add(signer)
    return by


def _attests(payload: bytes, digest: str) -> bool:
    try:
        statement = json.loads(payload)
        algorithm, _, hex_digest = digest.partition(":")
        return (statement.get("_type") == STATEMENT_TYPE and statement.get("predicateType") == PREDICATE_TYPE
                and (statement.get("predicate") or {}).get("digest") == digest
                and any((s.get("digest") or {}).get(algorithm) == hex_digest for s in statement.get("subject") or []))
    except (ValueError, AttributeError, TypeError, RecursionError):
        return False


def rebake(repository: Path, commit: str, recipe_path: str,
           fresh_store: Callable[[Path], LayoutStore] | None = None) -> Digest:
    """The digest of `commit` baked from a clean checkout into a fresh temporary store."""
    from imagebuild.build.bake import bake, read_input

    if _run_git(repository, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise UserError(f"commit {commit[:12]} is not in the git repository at {repository}",
                        hint="fetch it (git fetch origin) and run reproduce again")
    with tempfile.TemporaryDirectory(prefix="imagebuild-reproduce-") as scratch:
        checkout = Path(scratch) / "source"
        added = _run_git(repository, "worktree", "add", "--detach", "--quiet", str(checkout), commit)
        if added.returncode != 0:
            raise BuildError(f"could not check out commit {commit[:12]}: {added.stderr.strip()[:200]}")
        try:
            store_dir = Path(scratch) / "store"
            store = fresh_store(store_dir) if fresh_store else LayoutStore(store_dir)
            source = read_input(checkout / recipe_path)
            return bake(source, store).digest
        finally:
            _run_git(repository, "worktree", "remove", "--force", str(checkout))


def _is_commit(value: str) -> bool:
    return len(value) in (40, 64) and set(value) <= _COMMIT


def _run_git(repository: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C")
    return subprocess.run(["git", "-C", str(repository), *args], capture_output=True, text=True, env=env)
