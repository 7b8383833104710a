"""An image's SBOMs, SPDX 2.3 and CycloneDX 1.6 JSON, written from what its bake knows (contents.py):
not a scan of its files, but dpkg's own record of the os and runtime layers, the locked Python
closure and the commit.

The documents are deterministic: every date is the image's own creation time (its commit's),
every list sorted, every id derived from what it names, and the document's namespace and serial
number from the image's digest; so a reproducible bake attaches the same SBOM bytes again.
They are built as plain JSON here rather than through the SPDX and CycloneDX libraries, whose
output would change with their versions (and whose import costs every bake); the tests check
both documents with those libraries' validators.

Both are attached to the image manifest (stores/attachments.py) in the local store by the bake,
travel with it on push, and are read back by `imagebuild sbom`.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
import uuid
from typing import Callable

import imagebuild
from imagebuild.errors import UserError
from imagebuild.evidence.contents import DebianPackage, ImageContents, PythonDistribution
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.model import Descriptor

SPDX = "spdx"
CYCLONEDX = "cyclonedx"
ARTIFACT_TYPES = {SPDX: mt.SPDX_JSON, CYCLONEDX: mt.CYCLONEDX_JSON}    # format → artifactType (and payload type)
FORMAT_NAMES = {SPDX: "SPDX", CYCLONEDX: "CycloneDX"}
NAMESPACE = "https://imagebuild.dev/spdx"       # + /NAME/DIGEST-HEX: unique per image, as SPDX asks
TOOL = f"imagebuild-{imagebuild.__version__}"


def _json(document: dict) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def deb_purl(package: DebianPackage, contents: ImageContents) -> str:
    distro = contents.distro
    qualifiers = {"arch": package.architecture}
    if distro is not None and (distro.version_id or distro.codename):
        qualifiers["distro"] = f"{distro.id}-{distro.version_id}" if distro.version_id else distro.codename
    if package.source != package.name:
        qualifiers["upstream"] = package.source
    query = "&".join(f"{key}={_quoted(value)}" for key, value in sorted(qualifiers.items()) if value)
    namespace = distro.id if distro is not None else "debian"
    return f"pkg:deb/{namespace}/{_quoted(package.name)}@{_quoted(package.version)}" + (f"?{query}" if query else "")


def pypi_purl(distribution: PythonDistribution) -> str:
    name = re.sub(r"[-_.]+", "-", distribution.name).lower()
    return f"pkg:pypi/{_quoted(name)}@{_quoted(distribution.version)}"


def image_purl(contents: ImageContents) -> str:
    return f"pkg:oci/{_quoted(contents.name)}@{_quoted(contents.digest)}"


def _source_text(package: DebianPackage) -> str:
    return f"built from Debian source package {package.source} {package.source_version}"


def _vcs_url(contents: ImageContents) -> str | None:
    """The app's repository as a URL, when its remote is one (a local path or scp-like form is not)."""
    repository = contents.repository
    return repository if repository and "://" in repository else None


# -- SPDX 2.3 ---------------------------------------------------------------------------------------

# The host forms SPDX's own tools accept in a download location (a dotted name ending in 2 to 5
# letters); another remote (an address, a one-word host) is named in sourceInfo only, so the
# document stays valid for them.
_SPDX_HOST = re.compile(r"^(https?|ssh|git)://([^/@]+@)?[a-z0-9]+([-.][a-z0-9]+)*\.[a-z]{2,5}(:[0-9]{1,5})?(/\S*)?$",
                        re.IGNORECASE)


def _spdx_download_location(contents: ImageContents) -> str:
    url = _vcs_url(contents)
    return f"git+{url}@{contents.revision}" if url and _SPDX_HOST.match(url) else "NOASSERTION"


def _spdx_id(kind: str, *parts: str) -> str:
    """A stable SPDX id from what it names (ids allow letters, digits, '.' and '-' only)."""
    text = "-".join(parts)
    clean = re.sub(r"[^A-Za-z0-9.-]", "-", text)
    if clean != text:     # two names could clean to one id: the hash of the original keeps them apart
        clean += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"SPDXRef-{kind}-{clean}"


def spdx_document(contents: ImageContents) -> bytes:
    """The image's SBOM as SPDX 2.3 JSON: the image, the app's commit it was generated from, and every
    Debian package and Python distribution it contains."""
    image_id, app_id = "SPDXRef-Image", "SPDXRef-App"
    packages = [
        {"SPDXID": image_id, "name": contents.name, "versionInfo": contents.version,
         "downloadLocation": "NOASSERTION", "filesAnalyzed": False, "primaryPackagePurpose": "CONTAINER",
         "checksums": [{"algorithm": "SHA256", "checksumValue": _hex(contents.digest)}],
         "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                           "referenceLocator": image_purl(contents)}]},
        {"SPDXID": app_id, "name": contents.name, "versionInfo": contents.revision,
         "downloadLocation": _spdx_download_location(contents),
         "filesAnalyzed": False, "primaryPackagePurpose": "SOURCE",
         "sourceInfo": f"git commit {contents.revision}"
                       + (f" of {contents.repository}" if contents.repository else "")},
    ]
    relationships = [
        {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": image_id},
        {"spdxElementId": image_id, "relationshipType": "GENERATED_FROM", "relatedSpdxElement": app_id},
    ]
    for package in contents.debian:
        spdx_id = _spdx_id("deb", package.name, package.architecture)
        packages.append({
            "SPDXID": spdx_id, "name": package.name, "versionInfo": package.version,
            "downloadLocation": "NOASSERTION", "filesAnalyzed": False, "primaryPackagePurpose": "LIBRARY",
            "sourceInfo": _source_text(package),
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": deb_purl(package, contents)}]})
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": spdx_id})
    for distribution in contents.python:
        spdx_id = _spdx_id("python", distribution.name, distribution.path)
        entry = {
            "SPDXID": spdx_id, "name": distribution.name, "versionInfo": distribution.version,
            "downloadLocation": "NOASSERTION", "filesAnalyzed": False, "primaryPackagePurpose": "LIBRARY",
            "sourceInfo": f"installed in /{distribution.path}",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": pypi_purl(distribution)}]}
        if distribution.sha256:
            entry["checksums"] = [{"algorithm": "SHA256", "checksumValue": distribution.sha256}]
        packages.append(entry)
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": spdx_id})
    document = {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{contents.name}:{contents.version}",
        "documentNamespace": f"{NAMESPACE}/{_quoted(contents.name)}/{_hex(contents.digest)}",
        "creationInfo": {"created": contents.created, "creators": [f"Tool: {TOOL}"]},
        "packages": packages, "relationships": relationships,
    }
    return _json(document)


# -- CycloneDX 1.6 -------------------------------------------------------------------------------------

def _properties(**values: str) -> list[dict[str, str]]:
    return [{"name": f"imagebuild:{key.replace('_', '-')}", "value": value} for key, value in values.items() if value]


def cyclonedx_document(contents: ImageContents) -> bytes:
    """The image's SBOM as CycloneDX 1.6 JSON: the image as the BOM's subject, the app's commit, the
    operating system, and every Debian package and Python distribution it contains."""
    url = _vcs_url(contents)
    app: dict = {"type": "application", "bom-ref": "app", "name": contents.name, "version": contents.revision,
                 "properties": _properties(git_commit=contents.revision, git_repository=contents.repository or "")}
    if url:
        app["externalReferences"] = [{"type": "vcs", "url": url}]
    components = [app]
    if contents.distro is not None:
        distro = contents.distro
        components.append({"type": "operating-system", "bom-ref": "os", "name": distro.id,
                           "version": distro.version_id or distro.codename,
                           "properties": _properties(codename=distro.codename)})
    for package in contents.debian:
        components.append({
            "type": "library", "bom-ref": f"deb:{package.name}:{package.architecture}", "name": package.name,
            "version": package.version, "purl": deb_purl(package, contents),
            "properties": _properties(debian_architecture=package.architecture, debian_source=package.source,
                                      debian_source_version=package.source_version)})
    for distribution in contents.python:
        entry = {"type": "library", "bom-ref": f"python:/{distribution.path}:{distribution.name}",
                 "name": distribution.name, "version": distribution.version, "purl": pypi_purl(distribution),
                 "properties": _properties(python_path="/" + distribution.path)}
        if distribution.sha256:
            entry["hashes"] = [{"alg": "SHA-256", "content": distribution.sha256}]
        components.append(entry)
    image = {"type": "container", "bom-ref": "image", "name": contents.name, "version": contents.version,
             "purl": image_purl(contents), "hashes": [{"alg": "SHA-256", "content": _hex(contents.digest)}],
             "properties": _properties(architecture=contents.architecture, git_commit=contents.revision)}
    document = {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{NAMESPACE}/{contents.name}/{contents.digest}')}",
        "metadata": {"timestamp": contents.created, "component": image,
                     "tools": {"components": [{"type": "application", "name": "imagebuild",
                                               "version": imagebuild.__version__}]}},
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": sorted(c["bom-ref"] for c in components)}],
    }
    return _json(document)


DOCUMENTS: dict[str, Callable[[ImageContents], bytes]] = {SPDX: spdx_document, CYCLONEDX: cyclonedx_document}


# -- attached to the image, and read back --------------------------------------------------------------

def attach_sboms(store, result, fetch: Callable[[Descriptor], None] | None = None) -> dict[str, Descriptor]:
    """Write both SBOMs of a bake's image (`BakeResult`) into the local store as attachments of its
    manifest; format → the attachment's descriptor. `fetch` brings a layer the registry's cache lent
    into the store when its packages must be read. An index of several platforms: each platform's
    SBOMs are attached to its image and to the index too (so a gate on the index's digest sees every
    platform's packages)."""
    from imagebuild.evidence.contents import contents_of_bake
    from imagebuild.stores.attachments import attach
    from imagebuild.stores.place import LayoutPlace

    place = LayoutPlace(store, result.recipe.name)

    def subject_of(one):
        found = place.manifest(str(one.digest))
        if found is None:
            raise UserError(f"{one.local_ref} is not in the store at {store.root}")   # written by this bake
        return found

    index = subject_of(result) if result.images else None
    attached: dict[str, Descriptor] = {}
    for one in result.images or (result,):
        contents = contents_of_bake(store, one, fetch)
        subjects = [subject_of(one)] + ([index] if index is not None else [])
        for form, build in DOCUMENTS.items():
            document = build(contents)
            for subject in subjects:
                attached[form] = attach(place, subject, ARTIFACT_TYPES[form], document, ARTIFACT_TYPES[form],
                                        {"org.opencontainers.image.created": contents.created})
    return attached


def attached_sbom(place, subject: str, form: str) -> bytes | None:
    """The `form` SBOM attached to `subject` in `place`, or None."""
    from imagebuild.stores.attachments import attachments

    found = attachments(place, subject, ARTIFACT_TYPES[form])
    # the latest attached, should an older imagebuild have attached another
    return found[-1].payload if found else None


def _none_attached(what: str, form: str) -> UserError:
    return UserError(f"{what} has no {FORMAT_NAMES[form]} SBOM attached",
                     hint="bake it again with this imagebuild, and push it with `imagebuild push`")


def _platform_subject(place, manifest, what: str, platform) -> str:
    """The digest whose SBOM `sbom` prints: the image itself, or, for an index, its image for `platform`.
    An index without `platform` is refused with the platforms it offers: its SBOMs are one per platform,
    and printing one of them, or several documents at once, would mislead a reader or a parser."""
    from imagebuild.oci import mediatypes as mt
    from imagebuild.oci.model import MalformedError, parse_index, platform_child

    if manifest.media_type not in mt.INDEX_TYPES:
        return str(manifest.digest)    # one image: its own SBOM, as `pull --platform` takes it whole
    try:
        children = list(parse_index(manifest.raw))
    except MalformedError as exc:
        raise place.malformed(f"index {manifest.digest}", exc) from None
    offered = ", ".join(dict.fromkeys(f"{c.platform.os}/{c.platform.architecture}"
                                      + (f"/{c.platform.variant}" if c.platform.variant else "")
                                      for c in children if c.platform is not None)) or "none named"
    if platform is None:
        raise UserError(f"{what} is an index of several platforms ({offered}), each with its own SBOM",
                        hint="name one with --platform OS/ARCH")
    child = platform_child(children, platform)
    if child is None:
        raise UserError(f"{what} has no image for {platform.os}/{platform.architecture}"
                        f"{'/' + platform.variant if platform.variant else ''}", hint=f"it offers {offered}")
    return str(child.digest)


def read_sbom(reference: str, form: str, store, insecure: bool | None = None, platform=None) -> bytes:
    """The `form` SBOM of an image: a NAME:TAG (or digest) of the local store, else a registry reference
    HOST[:PORT]/NAME[:TAG|@DIGEST], its attachments found through the registry's referrers (the API, or
    the referrers tag schema). A multi-platform index gives the SBOM of its image for `platform` (an
    oci.model.Platform), and is refused without one. UserError when the image is unknown or has none."""
    from imagebuild.oci.digest import is_digest
    from imagebuild.oci.reference import Reference
    from imagebuild.stores.place import LayoutPlace, RegistryPlace

    if form not in ARTIFACT_TYPES:
        raise UserError(f"--format {form!r} is not one of {', '.join(ARTIFACT_TYPES)}",
                        hint="use --format spdx or cyclonedx")
    refs = store.refs() if store.exists() else {}
    local = reference in refs and "@" not in reference
    if local:
        place = LayoutPlace(store, reference.rpartition(":")[0])
        manifest = place.manifest(str(refs[reference].digest))
        if manifest is None:
            raise UserError(f"{reference} is in the store at {store.root} without its manifest",
                            hint="bake or pull it again")
        found = attached_sbom(place, _platform_subject(place, manifest, reference, platform), form)
        if found is not None:
            return found
    parsed = Reference.parse(reference)
    if not parsed.registry or is_digest(reference):
        if local:
            raise _none_attached(reference, form)
        raise UserError(f"no image {reference!r} in the local store at {store.root}",
                        hint="give NAME:TAG as `imagebuild images` lists it, or HOST[:PORT]/NAME:TAG in a registry")
    # a registry's image (pulled without its attachments, when the store has it): asked of the registry
    from imagebuild.stores.registry import open_client

    client = open_client(parsed.registry, insecure=insecure)
    try:
        place = RegistryPlace(client, parsed.repository)
        manifest = place.manifest(parsed.identifier)
        if manifest is None:
            raise UserError(f"{reference} is not in the registry", hint="check the name, tag or digest")
        found = attached_sbom(place, _platform_subject(place, manifest, reference, platform), form)
        if found is None:
            raise _none_attached(reference, form)
        return found
    finally:
        client.close()
