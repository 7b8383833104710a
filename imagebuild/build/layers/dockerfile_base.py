"""`os.dockerfile`: a base image built by a Docker engine from a Jinja2 Dockerfile.

The template (Dockerfile.base at the repository root is the project's own) is
rendered with the recipe's `os` and `runtime` sections and `base`, the engine's
name for the image to start FROM. The build context is the directory holding
the template: the files git tracks there at the commit, with the template
replaced by its rendered text. That context, written as a reproducible tar,
is the cache key, so an unchanged Dockerfile and context never reach the
engine again. A build is saved from the engine into the local store and used
by digest, like any `os.image`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from imagebuild.errors import BuildError, RecipeError
from imagebuild.sources.app_tree import SourceTree
from imagebuild.oci.compress import HashingSink
from imagebuild.oci.digest import Digest
from imagebuild.oci.layer import Entry, LayerResult, write_tar
from imagebuild.oci.reference import Reference
from imagebuild.progress import Progress
from imagebuild.recipe.sandbox import render_template
from imagebuild.recipe.model import Recipe
from imagebuild.stores.layout import LayoutStore

# Bumped when the same template and context would give a different base (what the key covers).
FORMAT = 1
OUTPUT_TAIL = 8           # lines of a failed step's output shown in the error
# Dockerfile.base at the repository root; the package holds it too (a link in the checkout).
TEMPLATE = Path(__file__).resolve().parents[2] / "Dockerfile.base"


def runtime_packages(recipe: Recipe) -> list[str]:
    """The Debian packages that hold the recipe's runtime (as the Debian layers install it)."""
    runtime = recipe.runtime
    if runtime.python:
        return [f"python{runtime.python}"]
    if runtime.java:
        return [f"openjdk-{runtime.java}-jre-headless"]
    if runtime.node:
        return ["nodejs"]
    return []


def template_context(recipe: Recipe, base: str) -> dict[str, Any]:
    """What a base template sees: `os`, `runtime` (plus `runtime.packages`) and `base`."""
    os_section = dataclasses.asdict(recipe.os)
    os_section["packages"] = list(recipe.os.packages)
    runtime = dataclasses.asdict(recipe.runtime)
    runtime.update(language=recipe.runtime.language, version=recipe.runtime.version,
                   packages=runtime_packages(recipe))
    return {"os": os_section, "runtime": runtime, "base": base}


def render(text: str, name: str, context: dict[str, Any]) -> str:
    """Render a base template (bounded and alone, as a recipe is); a mistake is a RecipeError
    at the template's file:line."""
    return render_template(text, name, context, hint="a base template can use os.*, runtime.* and base")


def engine_tag_for(ref: str) -> str:
    """The tag a store image gets in the engine so a Dockerfile can name it in FROM: its digest
    decides it, so the rendered Dockerfile (and with it the cache key) pins the base."""
    digest = Reference.parse(ref).digest
    assert digest is not None
    return f"imagebuild-base:{digest.hex[:20]}"


@dataclass(frozen=True)
class Prepared:
    """A rendered template and its context, ready to build; `key` names the result."""

    recipe: Recipe
    template: Path               # the template on disk (for messages)
    dockerfile: str              # its path inside the context
    context: Path                # the context tar, in a scratch directory
    key: str

    @property
    def ref_name(self) -> str:
        """The store's (and the engine's) tag of the built base."""
        return f"{self.recipe.name}-base:{Digest(self.key).hex[:20]}"


def prepare(recipe: Recipe, tree: SourceTree, base: str, scratch: Path) -> Prepared:
    """Render the template and write its context; nothing is asked of the engine."""
    assert recipe.os.dockerfile is not None and recipe.source is not None
    template = recipe.root / recipe.os.dockerfile
    recipe_file = str(recipe.source)
    try:
        repo_path = tree.repo_path(template)
    except ValueError:
        raise RecipeError(f"os.dockerfile {recipe.os.dockerfile!r} is outside the git repository",
                          file=recipe_file, key="os.dockerfile") from None
    text = tree.read(repo_path)
    if text is None:
        hint = "commit it: the base is built only from what git tracks" if template.is_file() else None
        raise RecipeError(f"os.dockerfile {recipe.os.dockerfile!r} is not committed" if hint
                          else f"os.dockerfile {recipe.os.dockerfile!r} does not exist",
                          file=recipe_file, key="os.dockerfile", hint=hint)
    try:
        source = text.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"os.dockerfile {recipe.os.dockerfile!r} is not UTF-8 text",
                          file=recipe_file, key="os.dockerfile") from None
    rendered = render(source, str(template), template_context(recipe, base)).encode("utf-8")
    directory = str(PurePosixPath(repo_path).parent)
    prefix = "" if directory == "." else directory
    name = PurePosixPath(repo_path).name
    files = [item for item in tree.files(prefix) if item.path != repo_path]
    entries = [Entry.file(name, rendered)] + list(tree.entries(files, prefix, ""))
    context = scratch / "dockerfile-context.tar"
    with open(context, "wb") as out:
        sink = HashingSink(out, "none")
        # mtime 0 everywhere: the key must not move with commits that leave the context alone
        write_tar(entries, sink, source_date_epoch=0)
    key_doc = f"imagebuild dockerfile base {FORMAT} {recipe.os.architecture} {Digest.from_hasher(sink.raw_hash)}"
    key = "sha256:" + hashlib.sha256(key_doc.encode()).hexdigest()
    return Prepared(recipe, template, name, context, key)


def cached(store: LayoutStore, prepared: Prepared) -> str | None:
    """`NAME@DIGEST` of the base this template and context built before, when the store still has it."""
    descriptor = store.refs().get(prepared.ref_name)
    if descriptor is None:
        return None
    manifest = store.read_manifest(descriptor.digest)
    if not all(store.has_blob(blob.digest) for blob in manifest.blobs()):
        return None
    return f"{prepared.ref_name.partition(':')[0]}@{descriptor.digest}"


def build(store: LayoutStore, prepared: Prepared, client, base_ref: str | None,
          progress: Progress) -> str:
    """Build the base with the engine, save it into the store; return `NAME@DIGEST`.

    `base_ref`: a store image (REF@DIGEST) the template starts FROM, loaded into
    the engine first (only tagged when the engine already has it).
    """
    from imagebuild.build.layers.debian import base_from_store
    from imagebuild.stores import engine

    known: dict[str, LayerResult] = {}
    if base_ref is not None:
        # The platform's image when os.image names an index; a UserError when it was never pulled.
        base = base_from_store(store, base_ref, prepared.recipe.os.architecture)
        engine.load_image(store, base.manifest_digest, [engine_tag_for(base_ref)], client=client)
        known = {layer.diff_id: LayerResult(diff_id=layer.diff_id, digest=layer.digest, size=layer.size,
                                            uncompressed_size=0, media_type=layer.descriptor.media_type)
                 for layer in base.layers}
    progress.note(f"building the base from {prepared.template.name} with the Docker engine ...")
    image_id = _engine_build(client, prepared)
    descriptor = engine.save_image(client, image_id, store, (prepared.ref_name,), known)
    return f"{prepared.ref_name.partition(':')[0]}@{descriptor.digest}"


_STEP = re.compile(r"^Step \d+/\d+ : (.*)$")
_MADE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _remove_dangling(client, image_id: str | None) -> None:
    """A failed build leaves the images of its finished steps untagged; remove them (with their
    untagged parents), as a successful build's are kept only under the base's tag."""
    if image_id is None:
        return
    try:
        if not client.api.inspect_image(image_id).get("RepoTags"):
            client.api.remove_image(image_id)
    except Exception:  # cleaning up is a courtesy; the build's error is what the user needs
        pass


def _engine_build(client, prepared: Prepared) -> str:
    """Run the build; return the image ID. A failed step is a BuildError naming the step and
    ending with the last lines it printed."""
    from docker.errors import DockerException
    import requests

    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL)
    step = ""
    steps = 0
    image_id = None
    intermediate = None
    name = prepared.template.name
    try:
        with open(prepared.context, "rb") as context:
            for message in client.api.build(fileobj=context, custom_context=True, dockerfile=prepared.dockerfile,
                                            tag=prepared.ref_name, rm=True, forcerm=True, pull=False,
                                            decode=True):
                for line in _ANSI.sub("", message.get("stream") or "").splitlines():
                    found = _STEP.match(line.strip())
                    made = _MADE.match(line)
                    if found:
                        step, steps = found.group(1), steps + 1
                        tail.clear()
                    elif made:
                        intermediate = made.group(1) if steps > 1 else None
                    elif line.strip() and not line.startswith((" ---> ", "Removing intermediate")):
                        tail.append(line.strip())
                error = message.get("error") or (message.get("errorDetail") or {}).get("message")
                if error:
                    _remove_dangling(client, intermediate)
                    raise BuildError(_failure(name, step, _ANSI.sub("", error), tail))
                image_id = (message.get("aux") or {}).get("ID") or image_id
        if image_id is None:       # an engine whose build output names no ID
            image_id = client.api.inspect_image(prepared.ref_name)["Id"]
    except (DockerException, requests.RequestException, OSError) as exc:
        from imagebuild.stores.engine import EngineError, _reason

        raise EngineError(f"the Docker engine failed building the base from {name}: {_reason(exc)}") from None
    return image_id


def _failure(name: str, step: str, error: str, tail: collections.deque[str]) -> str:
    where = f" at `{step}`" if step else ""
    output = f"; last output: {' | '.join(tail)}" if tail else ""
    return f"building the base from {name} failed{where}: {error.strip()}{output}"
