"""docker-archive: the tarball `docker load` reads.

Written with the reproducible layer writer, so the same image always gives
the same archive bytes. Layers keep their stored compression; `docker load`
decompresses them and checks each against its diff_id.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path

from imagebuild.errors import UserError
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.layer import Entry, write_tar
from imagebuild.stores.layout import LayoutStore, _os_error


def _blob_entry(store: LayoutStore, digest: str) -> Entry:
    path = f"blobs/sha256/{digest.split(':', 1)[1]}"
    return Entry(path, size=store.blob_size(digest),
                 opener=functools.partial(_verified_opener, store, digest))


@contextlib.contextmanager
def _verified_opener(store: LayoutStore, digest: str):
    with store.open_blob(digest) as reader:
        yield reader
        # drain so a corrupt blob is caught even if tar read exactly `size` bytes
        reader.read()


def write_docker_archive(store: LayoutStore, manifest_digest: str, repo_tags: list[str], target: str) -> Path:
    for repo_tag in repo_tags:
        name, _, tag = repo_tag.rpartition(":")
        if not name or not tag or "/" in tag:
            raise UserError(f"docker-archive tag {repo_tag!r} must have the form name:tag")
    manifest = store.read_manifest(manifest_digest)
    doc = [{
        "Config": f"blobs/sha256/{manifest.config.digest.hex}",
        "RepoTags": list(repo_tags),
        "Layers": [f"blobs/sha256/{layer.digest.hex}" for layer in manifest.layers],
    }]
    entries = [Entry.file("manifest.json", canonical_json(doc))]
    seen = set()
    for descriptor in manifest.blobs():
        if descriptor.digest not in seen:
            seen.add(descriptor.digest)
            entries.append(_blob_entry(store, descriptor.digest))
    target_path = Path(target)
    if target_path.is_dir():
        raise UserError(f"{target} is a directory; docker-archive needs a file path")
    parent = target_path.parent if str(target_path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"directory {parent} does not exist", hint="create it or choose another path")
    try:
        fd, temp = tempfile.mkstemp(dir=parent, prefix=f".{target_path.name}.")
    except OSError as exc:
        raise _os_error(parent, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write_tar(entries, handle, source_date_epoch=0)
        os.replace(temp, target_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return target_path
