"""Provenance: an in-toto Statement v1 with a SLSA provenance v1 predicate, saying how an image was baked.

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "HOST/NAME", "digest": {"sha256": "<hex>"}}],
     "predicateType": "https://slsa.dev/provenance/v1",
     "predicate": {
       "buildDefinition": {
         "buildType": BUILD_TYPE,
         "externalParameters": {"recipe": path in the repository, "outputs": [...], "platform": "linux/amd64",
                                "allowDirty": bool},
         "internalParameters": {"version": the image's version, "sourceDateEpoch": commit time},
         "resolvedDependencies": [
           {"name": "source", "uri": "git+URL@COMMIT", "digest": {"gitCommit": COMMIT},
            "annotations": {"clean": bool}},
           {"name": "recipe", "uri": path, "digest": {"sha256": ...}},
           {"name": "lock", "uri": path, "digest": {"sha256": ...}},      (when the recipe has a lock)
           {"name": "base", "uri": REF, "digest": {"sha256": ...}}]},     (with `os.image`)
       "runDetails": {
         "builder": {"id": the runner, "version": {"imagebuild": X}},
         "metadata": {"invocationId": ..., "startedOn": RFC 3339, "finishedOn": RFC 3339}}}}

It is signed as a DSSE envelope (payload type `application/vnd.in-toto+json`) and attached to the
image (stores/attachments.py, artifactType `application/vnd.in-toto+json`), so every copy of the
image with its attachments (push, promotion across registries) carries it. It is evidence about the
bake, not part of the image: the timestamps and the invocation differ on every bake of one digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import imagebuild
from imagebuild.errors import EvidenceError
from imagebuild.evidence.dsse import open_envelope, read_unverified, sign_envelope
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import ManifestBytes
from imagebuild.stores.attachments import attach, attachments
from imagebuild.stores.place import ImagePlace

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
# What `buildType` names: a bake by imagebuild, whose parameters are the ones listed above.
BUILD_TYPE = "urn:imagebuild:buildtype:bake:v1"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"

if TYPE_CHECKING:
    from imagebuild.build.bake import BakeInput, BakeResult


@dataclass(frozen=True)
class BakeRun:
    """When and where a bake ran: what the provenance says besides the bake's own inputs."""
    started_on: datetime
    finished_on: datetime
    invocation_id: str
    builder_id: str
    runner: str

    @classmethod
    def observe(cls, started_on: datetime, environ: Mapping[str, str] | None = None) -> "BakeRun":
        """The run that started at `started_on` and ends now, on this runner (CI variables, else the host)."""
        env = os.environ if environ is None else environ
        builder_id, runner, invocation = runner_of(env)
        return cls(started_on, now(), invocation or f"urn:uuid:{uuid.uuid4()}", builder_id, runner)


def now() -> datetime:
    return datetime.now(timezone.utc)


def runner_of(env: Mapping[str, str]) -> tuple[str, str, str | None]:
    """(builder id, runner name, invocation id or None) from the CI's variables, else this host's name."""
    if env.get("GITHUB_ACTIONS") == "true":
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        run = (f"{server}/{env.get('GITHUB_REPOSITORY', '')}/actions/runs/{env.get('GITHUB_RUN_ID', '')}"
               f"/attempts/{env.get('GITHUB_RUN_ATTEMPT', '1')}") if env.get("GITHUB_RUN_ID") else None
        kind = env.get("RUNNER_ENVIRONMENT", "github-hosted")
        return f"{server}/actions/runner/{kind}", env.get("RUNNER_NAME", "") or kind, run
    if env.get("GITLAB_CI") == "true":
        server = env.get("CI_SERVER_URL", "https://gitlab.com")
        runner_id = env.get("CI_RUNNER_ID", "")
        return (f"{server}/-/runners/{runner_id}", env.get("CI_RUNNER_DESCRIPTION", "") or runner_id,
                env.get("CI_JOB_URL") or None)
    host = socket.gethostname()
    return f"urn:imagebuild:host:{host}", host, None


def statement(subject_name: str, digest: str, *, recipe_path: str, recipe_sha256: str, lock_path: str | None,
              lock_sha256: str | None, source_uri: str | None, commit: str, clean: bool, version: str,
              source_date_epoch: int, outputs: Sequence[str], platform: str, allow_dirty: bool, run: BakeRun,
              base: tuple[str, str] | None = None) -> dict[str, Any]:
    """The provenance statement of image `digest` named `subject_name` (HOST/NAME, or NAME locally)."""
    source = {"name": "source", "uri": f"git+{source_uri or 'unknown'}@{commit}", "digest": {"gitCommit": commit},
              "annotations": {"clean": clean}}
    dependencies: list[dict[str, Any]] = [source,
                                          {"name": "recipe", "uri": recipe_path, "digest": {"sha256": recipe_sha256}}]
    if lock_path is not None and lock_sha256 is not None:
        dependencies.append({"name": "lock", "uri": lock_path, "digest": {"sha256": lock_sha256}})
    if base is not None:
        dependencies.append({"name": "base", "uri": base[0], "digest": {"sha256": Digest(base[1]).hex}})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": Digest(digest).hex}}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"recipe": recipe_path, "outputs": list(outputs), "platform": platform,
                                       "allowDirty": allow_dirty},
                "internalParameters": {"version": version, "sourceDateEpoch": source_date_epoch},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": run.builder_id,
                            "version": {"imagebuild": imagebuild.__version__, "runner": run.runner}},
                "metadata": {"invocationId": run.invocation_id, "startedOn": _rfc3339(run.started_on),
                             "finishedOn": _rfc3339(run.finished_on)},
            },
        },
    }


def bake_statement(result: BakeResult, source: BakeInput, subject_name: str, outputs: Sequence[str], allow_dirty: bool,
                   run: BakeRun) -> dict[str, Any]:
    """The statement of a bake: `result` made from `source`."""
    from imagebuild.sources.lockfile import lock_path_for

    recipe = result.recipe
    toplevel = Path(result.facts.toplevel)
    recipe_file = Path(recipe.source)
    lock_file = lock_path_for(recipe_file) if recipe.os.image is None else None
    base = None
    if recipe.os.image is not None and "@" in recipe.os.image:
        name, _, digest = recipe.os.image.rpartition("@")
        base = (name, digest)
    return statement(
        subject_name, str(result.digest), recipe_path=_in_repository(recipe_file, toplevel),
        recipe_sha256=_sha256_of(recipe_file),
        lock_path=_in_repository(lock_file, toplevel) if lock_file and lock_file.exists() else None,
        lock_sha256=_sha256_of(lock_file) if lock_file and lock_file.exists() else None,
        source_uri=source.commit.source, commit=source.commit.revision, clean=not result.dirty,
        version=result.version, source_date_epoch=source.commit.time, outputs=outputs,
        platform=f"linux/{recipe.os.architecture}", allow_dirty=allow_dirty, run=run, base=base)


def attach_provenance(place: ImagePlace, subject: ManifestBytes, document: Mapping[str, Any], key) -> None:
    """Sign `document` as a DSSE envelope with `key` and attach it to `subject` in `place`."""
    payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")
    envelope = sign_envelope(payload, mt.IN_TOTO, key)
    attach(place, subject, mt.IN_TOTO, envelope, mt.DSSE_ENVELOPE,
           {PREDICATE_ANNOTATION: document.get("predicateType", "")})


def read_provenance(place: ImagePlace, digest: str, keys: Iterable | None) -> dict[str, Any]:
    """The provenance statement attached to image `digest` in `place`: of those a key in `keys` verifies,
    the one that finished last (a reproducible bake can give one digest several). `keys` None reads
    it unverified (for showing only; never for a decision). EvidenceError (exit 2) when the image has
    no provenance, none verifies, or none is a SLSA provenance statement about this digest."""
    keys = None if keys is None else list(keys)
    digest = str(Digest(digest))
    found = attachments(place, digest, mt.IN_TOTO)
    if not found:
        raise EvidenceError(f"image {digest} in {place.label} has no provenance",
                            hint="bake it with --sign KEY to attach one")
    statements, problems = [], []
    for attachment in found:
        try:
            payload_type, payload = _open(attachment.payload, keys)
            statements.append(_checked_statement(payload_type, payload, digest))
        except EvidenceError as exc:
            problems.append(exc)
    if not statements:
        raise problems[0]
    return max(statements, key=lambda s: s["predicate"]["runDetails"]["metadata"].get("finishedOn", ""))


def source_of(document: Mapping[str, Any]) -> dict[str, Any]:
    """The source dependency of a provenance statement: `uri`, `digest.gitCommit`, `annotations.clean`."""
    for dependency in document["predicate"]["buildDefinition"]["resolvedDependencies"]:
        if dependency.get("name") == "source":
            return dependency
    raise EvidenceError("the provenance names no source", hint="it was not written by imagebuild")


def _open(envelope: bytes, keys: list | None) -> tuple[str, bytes]:
    if keys is not None:
        payload_type, payload, _ = open_envelope(envelope, keys)
        return payload_type, payload
    return read_unverified(envelope)


def _checked_statement(payload_type: str, payload: bytes, digest: str) -> dict[str, Any]:
    if payload_type != mt.IN_TOTO:
        raise EvidenceError(f"the provenance envelope holds {payload_type[:80]!r}, not an in-toto statement",
                            hint="it was not written by imagebuild")
    try:
        document = json.loads(payload)
        if document.get("_type") != STATEMENT_TYPE or document.get("predicateType") != SLSA_PROVENANCE:
            raise ValueError("not an in-toto statement of SLSA provenance v1")
        names = {(s.get("digest") or {}).get("sha256") for s in document["subject"]}
        document["predicate"]["runDetails"]["metadata"]
        document["predicate"]["buildDefinition"]["resolvedDependencies"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EvidenceError(f"the provenance statement is malformed ({str(exc)[:80]})",
                            hint="it was not written by imagebuild") from None
    if Digest(digest).hex not in names:
        raise EvidenceError(f"the provenance attached to {digest} is about another image",
                            hint="the attachment was moved or forged; do not trust it")
    return document


def _in_repository(path: Path, toplevel: Path) -> str:
    try:
        return path.resolve().relative_to(toplevel.resolve()).as_posix()
    except ValueError:
        return path.name


def _sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
