"""Tags only promotion may write: environment tags and promotion records.

An environment's tag (`hello:prod`) and a promotion record's tag
(`hello:promotion-prod-000003-5f1c0a9e2b7d`) share one namespace with the
version tags a bake or a push writes. A push to one of them would move an
environment, or forge a record, without any promotion rule being checked; a
version named like one would do the same on its first `bake --push`.
"""

from __future__ import annotations

from typing import Iterable

from imagebuild.errors import UserError
from imagebuild.stores.layout import DISK_SUFFIX

RECORD_PREFIX = "promotion-"
REFERRERS_PREFIX = "sha256-"      # the referrers tag schema's index tags


def promotion_only(tag: str, environments: Iterable[str]) -> str | None:
    """What `tag` is reserved for, or None when any push may write it."""
    if tag.startswith(RECORD_PREFIX):
        return f"tag {tag!r} is a promotion record's tag"
    if tag in set(environments):
        return f"tag {tag!r} is environment {tag}'s tag"
    return None


def refuse_promotion_tag(tag: str, environments: Iterable[str]) -> None:
    """Refuse a tag write outside promotion to a tag only promotion writes."""
    problem = promotion_only(tag, environments)
    if problem:
        raise UserError(f"{problem}, which only promotion writes",
                        hint="push a version tag, then use `imagebuild promote IMAGE --to ENV`")


def refuse_version_tag(tag: str, environments: Iterable[str]) -> None:
    """Refuse a version whose tag would land on an environment's, a record's, a referrers index's or a disk's tag."""
    problem = promotion_only(tag, environments)
    if problem is None and tag.startswith(REFERRERS_PREFIX):
        problem = f"tag {tag!r} is a referrers index's tag"
    if problem is None and tag.endswith(DISK_SUFFIX):
        problem = f"tag {tag!r} ends in {DISK_SUFFIX!r}, the suffix of the VM disk baked from an image"
    if problem:
        raise UserError(f"version {tag!r} cannot be an image tag: {problem}",
                        hint="rename the git tag, or use a version that is not an environment name")
