"""The app layer: exactly the files git tracks at the commit, under `app.path`, minus `exclude`.

The files come from `SourceTree` (imagebuild/sources/app_tree.py), which reads them out of git.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from typing import Callable, Iterator

from imagebuild.build.cache import store_layer
from imagebuild.errors import RecipeError
from imagebuild.oci.layer import DIR, Entry, LayerResult
from imagebuild.plan import LayerInputs
from imagebuild.recipe.model import Recipe
from imagebuild.sources.app_tree import SourceTree, TrackedFile
from imagebuild.stores.layout import LayoutStore


def app_prefix(recipe: Recipe, tree: SourceTree) -> str:
    app_dir = recipe.root / recipe.app.path
    try:
        return tree.repo_path(app_dir)
    except ValueError:
        raise RecipeError(f"app.path {recipe.app.path!r} is outside the git repository at {tree.toplevel}",
                          file=str(recipe.source) if recipe.source else None, key="app.path") from None


def app_files(recipe: Recipe, tree: SourceTree) -> tuple[str, list[TrackedFile]]:
    """The repo prefix of the app and the tracked files under it that are not excluded."""
    prefix = app_prefix(recipe, tree)
    excluded = _matcher(recipe.app.exclude)
    kept = []
    for item in tree.files(prefix):
        rel = item.path[len(prefix):].lstrip("/") if prefix else item.path
        if not excluded(rel):
            kept.append(item)
    if not kept:
        raise RecipeError(f"no files git tracks under app.path {recipe.app.path!r} at commit {tree.commit[:12]}",
                          file=str(recipe.source) if recipe.source else None, key="app.path",
                          hint="commit the app's files, or fix app.path / app.exclude")
    return prefix, kept


# A pattern that is only names and slashes: no wildcard, class, negation, escape, comment or edge space.
_PLAIN_PATTERN = re.compile(r"[^*?\[\]!\\#\s/][^*?\[\]\\\s]*")


def _matcher(exclude: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether a path matches the gitignore-style patterns. Patterns that are plain names (`tests/`,
    `docs`, `web/static/`) are matched here as git does; any other pattern takes pathspec (and its import)."""
    if not exclude:
        return lambda _path: False
    if all(_is_plain(pattern) for pattern in exclude):
        rules = [_plain_rule(pattern) for pattern in exclude]
        return lambda path: any(rule(path) for rule in rules)
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(exclude).match_file


def _is_plain(pattern: str) -> bool:
    return (_PLAIN_PATTERN.fullmatch(pattern) is not None and not pattern.endswith("//")
            and not any(part in ("", ".", "..") for part in pattern.rstrip("/").split("/")))


def _plain_rule(pattern: str) -> Callable[[str], bool]:
    """gitignore for a pattern without wildcards: a slash before its end anchors it to the root (else it
    matches at any depth); a trailing slash matches only directories, i.e. the files under them."""
    directory_only = pattern.endswith("/")
    body = pattern.rstrip("/")
    if "/" in body:        # anchored: the path itself, or what lies under it
        return lambda path: path.startswith(body + "/") or (not directory_only and path == body)
    if directory_only:     # a directory of that name at any depth
        return lambda path: body in path.split("/")[:-1]
    return lambda path: body in path.split("/")


# Names that usually hold credentials. A warning, not a refusal: a test fixture or a public
# certificate can look the same, and app.exclude (or leaving them out of git) settles it.
_CREDENTIAL_NAMES = frozenset({".env", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".netrc", ".pypirc",
                               ".git-credentials", ".npmrc", ".htpasswd"})
_CREDENTIAL_SUFFIXES = (".pem", ".key", ".p12", ".pfx", ".jks", ".keystore")
_HARMLESS_ENV_SUFFIXES = (".example", ".sample", ".template", ".dist", ".defaults")
CREDENTIALS_SHOWN = 5


def looks_like_credentials(path: str) -> bool:
    """`.env`, `.env.production`, private keys (`id_rsa`, `*.key`), `*.pem`, `*.p12`, ...;
    `.env.example` and public keys (`id_rsa.pub`) are not."""
    name = posixpath.basename(path).lower()
    if name in _CREDENTIAL_NAMES:
        return True
    if name.startswith(".env.") and not name.endswith(_HARMLESS_ENV_SUFFIXES):
        return True
    return name.endswith(_CREDENTIAL_SUFFIXES)


def credential_warnings(recipe: Recipe, prefix: str, files: list[TrackedFile]) -> list[str]:
    """One warning line naming the files of the app layer that look like credentials, or none."""
    found = [posixpath.join(recipe.app.dest, item.path[len(prefix):].lstrip("/") if prefix else item.path)
             for item in files if looks_like_credentials(item.path)]
    if not found:
        return []
    shown = ", ".join(found[:CREDENTIALS_SHOWN])
    more = f" and {len(found) - CREDENTIALS_SHOWN} more" if len(found) > CREDENTIALS_SHOWN else ""
    return [f"the app layer holds files that look like credentials: {shown}{more}; anyone who pulls the image "
            "can read them. Leave them out with app.exclude (or out of git) and pass secrets at run time"]


def inputs(recipe: Recipe, prefix: str, files: list[TrackedFile], epoch: int) -> LayerInputs:
    listing = hashlib.sha256()
    for item in files:
        listing.update(f"{item.mode} {item.oid} {item.path}\0".encode("utf-8", "surrogateescape"))
    return LayerInputs("app", {"files": "sha256:" + listing.hexdigest(), "prefix": prefix,
                               "dest": recipe.app.dest}, epoch)


def entries(recipe: Recipe, tree: SourceTree, prefix: str, files: list[TrackedFile]) -> Iterator[Entry]:
    # The destination directory itself, so WorkingDir exists with sane permissions.
    yield Entry(recipe.app.dest.strip("/"), DIR, 0o755)
    yield from tree.entries(files, prefix, recipe.app.dest)



class AppLayer:
    """The app layer's builder: the files git tracks, dated by the commit."""

    name = "app"
    cached = None
    seconds = 0.0

    def __init__(self, recipe: Recipe, tree: SourceTree, prefix: str, files: list[TrackedFile], epoch: int):
        """`prefix` and `files`: `app_files(recipe, tree)`, listed once for the warnings and the layer."""
        self.recipe, self.tree, self.prefix, self.files, self.epoch = recipe, tree, prefix, files, epoch
        self.inputs = inputs(recipe, self.prefix, self.files, epoch)

    def build(self, store: LayoutStore) -> LayerResult:
        return store_layer(store, entries(self.recipe, self.tree, self.prefix, self.files), self.epoch)
