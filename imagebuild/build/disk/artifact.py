"""The disk in the local store: an OCI artifact attached to its image, under the image's version.

`NAME:VERSION-disk` names an OCI image manifest with artifactType
application/vnd.imagebuild.disk.v1, the empty config, one layer (the qcow2 disk,
compressed) and `subject` the image it was made from, so a registry's referrers
API lists it with the image and `push`/`promote` carry it by tag like any
manifest. Annotations say what the qcow2 expands to (the raw disk's digest and
size: the disk's identity) and which kernel and busybox went in.

A disk is rebuilt only when its inputs change: the image digest, the kernel and
busybox versions the mirror offers, and the disk format.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from imagebuild.atomic import replacing
from imagebuild.build.disk import assemble
from imagebuild.build.disk.build import DISK_FORMAT, build_disk
from imagebuild.errors import UserError
from imagebuild.sources.debian_index import AptIndex, DebianSource
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import (ANNOTATION_CREATED, ANNOTATION_TITLE, ANNOTATION_VERSION, EMPTY_DESCRIPTOR,
                                  EMPTY_JSON, Descriptor)
from imagebuild.recipe.model import DiskSpec
from imagebuild.stores.layout import DISK_SUFFIX, LayoutStore

QCOW2_TYPE = "application/vnd.imagebuild.disk.qcow2"
ANN = "dev.imagebuild.disk."
ANN_RAW_DIGEST = ANN + "raw.digest"
ANN_RAW_SIZE = ANN + "raw.size"
ANN_KERNEL = ANN + "kernel"
ANN_BUSYBOX = ANN + "busybox"
ANN_SYSTEMD_BOOT = ANN + "systemd-boot"
ANN_INPUTS = ANN + "inputs"
FORMATS = (".qcow2", ".raw", ".img")


@dataclass(frozen=True)
class DiskResult:
    reference: str            # NAME:VERSION-disk in the local store
    digest: Digest            # the artifact manifest's digest
    raw_digest: Digest
    raw_size: int
    qcow2_size: int
    image_size: int           # the container image's compressed layers, to compare
    kernel: str
    cached: bool

    def to_json(self) -> dict:
        return {"reference": self.reference, "digest": str(self.digest), "raw_digest": str(self.raw_digest),
                "raw_size": self.raw_size, "qcow2_size": self.qcow2_size, "image_size": self.image_size,
                "kernel": self.kernel, "cached": self.cached}


def disk_ref(image_ref: str) -> str:
    return image_ref + DISK_SUFFIX


def _inputs_key(image_digest: str, source: DebianSource, kernel_package: str) -> str:
    index = AptIndex(source)
    kernel = index.candidate(kernel_package)
    busybox = index.candidate("busybox-static")
    try:
        systemd_boot = index.candidate("systemd-boot-efi")["Version"]
    except UserError:
        systemd_boot = ""
    facts = {"format": DISK_FORMAT, "image": image_digest, "sources": source.sources(),
             "kernel": [kernel_package, kernel["Version"], kernel.get("Depends", "")],
             "busybox": busybox["Version"], "systemd-boot": systemd_boot}
    return "sha256:" + hashlib.sha256(canonical_json(facts)).hexdigest()


def _cached(store: LayoutStore, reference: str, key: str) -> dict | None:
    descriptor = store.refs().get(reference)
    if descriptor is None:
        return None
    manifest = json.loads(store.read_blob(str(descriptor.digest)))
    annotations = manifest.get("annotations") or {}
    layers = manifest.get("layers") or []
    if annotations.get(ANN_INPUTS) != key or len(layers) != 1 or not store.has_blob(layers[0]["digest"]):
        return None
    return manifest


def bake_disk(store: LayoutStore, image_ref: str, source: DebianSource, kernel_package: str,
              hostname: str, max_size: int = DiskSpec().max_bytes) -> DiskResult:
    """The disk of a stored image, built or found in the store, tagged IMAGE_REF-disk; its layers may
    expand to MAX_SIZE bytes. The build happens in a temporary folder, removed whatever happens."""
    image = store.resolve(image_ref)
    manifest = store.read_manifest(str(image.digest))
    image_size = sum(layer.size for layer in manifest.layers)
    reference = disk_ref(image_ref)
    key = _inputs_key(str(image.digest), source, kernel_package)
    found = _cached(store, reference, key)
    if found is not None:
        notes = found["annotations"]
        return DiskResult(reference, Digest(store.refs()[reference].digest), Digest(notes[ANN_RAW_DIGEST]),
                          int(notes[ANN_RAW_SIZE]), int(found["layers"][0]["size"]), image_size,
                          notes[ANN_KERNEL], cached=True)
    with tempfile.TemporaryDirectory(prefix="imagebuild-disk-") as scratch:
        built = build_disk(store, manifest, source, kernel_package, Path(scratch), hostname, max_size)
        with open(built.qcow2, "rb") as handle:
            qcow2_digest, qcow2_size = store.put_blob_stream(handle)
    store.put_blob(EMPTY_JSON)
    image_notes = json.loads(store.read_blob(str(image.digest))).get("annotations") or {}
    version = image_notes.get(ANNOTATION_VERSION, "")
    title = f"{hostname}-{version}.qcow2" if version else f"{hostname}.qcow2"
    annotations = {ANN_RAW_DIGEST: built.raw_digest, ANN_RAW_SIZE: str(built.raw_size),
                   ANN_KERNEL: built.kernel, ANN_BUSYBOX: built.busybox, ANN_INPUTS: key}
    if built.systemd_boot:
        annotations[ANN_SYSTEMD_BOOT] = built.systemd_boot
    for name in (ANNOTATION_VERSION, ANNOTATION_CREATED):
        if name in image_notes:
            annotations[name] = image_notes[name]
    artifact = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": mt.IMAGEBUILD_DISK,
        "config": EMPTY_DESCRIPTOR.to_dict(),
        "layers": [{"mediaType": QCOW2_TYPE, "digest": str(qcow2_digest), "size": qcow2_size,
                    "annotations": {ANNOTATION_TITLE: title}}],
        "subject": Descriptor(image.media_type, image.digest, image.size).to_dict(),
        "annotations": annotations,
    }
    descriptor = store.put_manifest(canonical_json(artifact), mt.OCI_MANIFEST, [reference])
    return DiskResult(reference, Digest(descriptor.digest), Digest(built.raw_digest), built.raw_size, qcow2_size,
                      image_size, built.kernel, cached=False)


def check_disk_output(destination: str) -> Path:
    """`disk:FILE` with FILE ending in .qcow2, .raw or .img, in a directory that exists."""
    path = Path(destination.partition(":")[2])
    if not destination.startswith("disk:") or not path.name:
        raise UserError(f"{destination!r} is not a disk output", hint="use disk:FILE.qcow2 or disk:FILE.raw")
    if path.suffix not in FORMATS:
        raise UserError(f"{path} ends in neither .qcow2 nor .raw/.img",
                        hint="name the file FILE.qcow2 or FILE.raw; the ending picks the format")
    if not path.parent.is_dir():
        raise UserError(f"{path.parent} is not a directory", hint="create it or write the disk elsewhere")
    return path


def write_disk(store: LayoutStore, reference: str, path: Path) -> None:
    """Write a stored disk to PATH as qcow2 (as stored) or raw, never leaving half a file."""
    manifest = json.loads(store.read_blob(str(store.resolve(reference).digest)))
    if manifest.get("artifactType") != mt.IMAGEBUILD_DISK:
        raise UserError(f"{reference} is not a disk", hint="bake it with --format disk")
    blob = manifest["layers"][0]["digest"]
    with replacing(path) as pending:
        if path.suffix == ".qcow2":
            with store.open_blob(blob) as reader:
                while chunk := reader.read(1 << 22):
                    pending.write(chunk)
        else:
            pending.file.flush()
            assemble.to_raw(store.blob_path(blob), pending.temp_path)
