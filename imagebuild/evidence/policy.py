"""Promotion gates: an environment's `policy:` checked against the evidence attached to one image.

`evaluate` reads what the place holds about the digest (signatures, SBOMs, provenance, reproduction
attestations) and returns one `CheckResult` per check the policy asks for, in a fixed order. It writes
nothing; `release/promote.py` refuses the promotion when any check failed (docs/evidence.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from imagebuild.errors import EvidenceError, UserError
from imagebuild.oci import mediatypes as mt
from imagebuild.recipe.model import Policy
from imagebuild.registry.client import ManifestBytes
from imagebuild.sources.git import public_url
from imagebuild.stores.attachments import Attachment, attachments
from imagebuild.stores.place import ImagePlace

SBOM_TYPES = (mt.SPDX_JSON, mt.CYCLONEDX_JSON)
# What a refused promotion tells the user to do, per check.
REMEDY = {
    "signed": "sign the image with a key that signed_by lists",
    "sbom": "attach an SBOM to the image",
    "provenance": "attach provenance of a build from that repository, signed with a signed_by key",
    "deny": "drop the denied packages, bake and promote the new version",
    "reproduced": "run `imagebuild reproduce REF --key KEY` with the private keys of the listed rebuilders",
}


@dataclass(frozen=True)
class CheckResult:
    name: str        # signed | sbom | provenance | deny | reproduced
    passed: bool
    why: str

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "why": self.why}


@dataclass(frozen=True)
class PublicKey:
    path: str        # as the recipe names it
    key: Any         # what evidence/keys.load_public_key returns
    id: str


def load_keys(paths: Sequence[str], root: Path) -> list[PublicKey]:
    """The public keys a policy names, relative to the recipe's directory."""
    from imagebuild.evidence.keys import key_id, load_public_key

    out = []
    for path in paths:
        key = load_public_key(root / path)
        out.append(PublicKey(path, key, key_id(key)))
    return out


def evaluate(place: ImagePlace, manifest: ManifestBytes, policy: Policy, root: Path) -> list[CheckResult]:
    """Every check `policy` asks for, run against what `place` holds about `manifest`."""
    if policy.empty:
        return []
    signers = load_keys(policy.signed_by, root)
    rebuilders = load_keys(policy.rebuilder_keys, root) if policy.reproduced else []
    digest = str(manifest.digest)
    # Only the kinds the checks read: an image's other referrers (its VM disk) may be far larger than evidence.
    kinds = [*(SBOM_TYPES if policy.sbom or policy.deny else ()),
             *((mt.IMAGEBUILD_REPRODUCED,) if policy.reproduced else ())]
    found = [a for kind in kinds for a in attachments(place, digest, kind)]
    results = []
    if policy.signed_by:
        results.append(check_signed(place, digest, signers))
    if policy.sbom:
        results.append(check_sbom(found))
    if policy.provenance_from is not None:
        results.append(check_provenance(place, digest, signers, policy.provenance_from))
    if policy.deny:
        results.append(check_deny(found, policy.deny))
    if policy.reproduced:
        results.append(check_reproduced(found, digest, rebuilders, policy.reproduced))
    return results


def check_signed(place: ImagePlace, digest: str, keys: Sequence[PublicKey]) -> CheckResult:
    from imagebuild.evidence.signatures import verify_image

    try:
        signed = verify_image(place, digest, [k.key for k in keys])
    except EvidenceError as exc:
        return CheckResult("signed", False, exc.message)
    if not signed:
        return CheckResult("signed", False, f"no signature by {_names(keys)}")
    return CheckResult("signed", True, f"signed by {_named(keys, signed)}")


def check_sbom(found: Sequence[Attachment]) -> CheckResult:
    kinds = sorted({a.artifact_type for a in found if a.artifact_type in SBOM_TYPES})
    if not kinds:
        return CheckResult("sbom", False, "no SBOM attached")
    return CheckResult("sbom", True, f"SBOM attached ({', '.join(kinds)})")


def check_provenance(place: ImagePlace, digest: str, keys: Sequence[PublicKey], source: str) -> CheckResult:
    from imagebuild.evidence.provenance import read_provenance, source_of

    try:
        dependency = source_of(read_provenance(place, digest, [k.key for k in keys]))
    except EvidenceError as exc:
        return CheckResult("provenance", False, exc.message)
    built_from = source_repository(dependency)
    if built_from is None or same_repository_form(built_from) != same_repository_form(source):
        return CheckResult("provenance", False, f"the provenance names {built_from or 'no source repository'}, "
                                                f"not {source}")
    return CheckResult("provenance", True, f"built from {source}")


def check_deny(found: Sequence[Attachment], deny: Sequence[str]) -> CheckResult:
    sboms = [a for a in found if a.artifact_type in SBOM_TYPES]
    if not sboms:
        return CheckResult("deny", False, "no SBOM attached to check the denied packages against")
    listed: set[str] = set()
    for sbom in sboms:
        listed |= sbom_package_names(sbom)
    denied = sorted({name for name in deny if _package_key(name) in listed})
    if denied:
        return CheckResult("deny", False, f"the SBOM lists denied package(s) {', '.join(denied)}")
    return CheckResult("deny", True, f"none of {len(deny)} denied package(s) in the SBOM")


def check_reproduced(found: Sequence[Attachment], digest: str, keys: Sequence[PublicKey], wanted: int) -> CheckResult:
    from imagebuild.evidence.reproduce import reproduced_by

    by = reproduced_by(found, digest, [k.key for k in keys])
    if len(by) < wanted:
        return CheckResult("reproduced", False, f"reproduced by {len(by)} of the {wanted} distinct key(s) "
                                                f"needed from {_names(keys)}")
    return CheckResult("reproduced", True, f"reproduced by {_named(keys, by)}")


def refusal(environment: str, what: str, results: Sequence[CheckResult]) -> tuple[str, str] | None:
    """(message, what to do) of a refused promotion, naming every failed check; None when all passed."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return None
    checks = "; ".join(f"check {r.name}: {r.why}" for r in failed)
    return f"policy of {environment} refuses {what}: {checks}", "; ".join(REMEDY[r.name] for r in failed)


# -- reading the evidence ------------------------------------------------------------------------

def source_repository(dependency: dict) -> str | None:
    """The repository of a provenance's source dependency, written `git+URL@COMMIT` (SLSA's form)."""
    uri, commit = dependency.get("uri"), (dependency.get("digest") or {}).get("gitCommit")
    if not isinstance(uri, str) or not isinstance(commit, str):
        return None
    return uri.removeprefix("git+").removesuffix(f"@{commit}")


def same_repository_form(url: str) -> str:
    """One spelling of a repository URL: no `git+` prefix, userinfo, trailing `/` or `.git`."""
    url = url.strip().removeprefix("git+")
    clean = public_url(url) or url
    if "://" in clean:
        clean = clean.split("#", 1)[0]
    return clean.rstrip("/").removesuffix(".git").lower()


def sbom_package_names(sbom: Attachment) -> set[str]:
    """The package names an SPDX 2.3 (`packages[].name`) or CycloneDX (`components[].name`) JSON SBOM lists,
    compared in one form (lower case, `_` and `.` as `-`)."""
    try:
        data = json.loads(sbom.payload)
    except (ValueError, RecursionError):
        raise UserError(f"the SBOM {sbom.descriptor.digest} is not JSON",
                        hint="attach the SBOM again") from None
    entries = []
    if isinstance(data, dict):
        for key in ("packages", "components"):
            if isinstance(data.get(key), list):
                entries += data[key]
    return {_package_key(e["name"]) for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)}


def _package_key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _named(keys: Sequence[PublicKey], ids) -> str:
    """The recipe's paths of the keys with these ids."""
    return ", ".join(k.path for k in keys if k.id in set(ids))


def _names(keys: Sequence[PublicKey]) -> str:
    return ", ".join(k.path for k in keys) or "no key"
