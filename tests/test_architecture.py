"""The package tree's rule: a module imports only from lower ranks, or sideways within its own folder.

Every module of `imagebuild` is read with `ast` (imports at the top and inside functions alike),
so a lazy import cannot hide an upward dependency. docs/architecture.md shows the ranks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "imagebuild"

# Lowest first. Each rank is a set of module prefixes; a prefix names a module or a folder.
RANKS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("imagebuild", "imagebuild.errors", "imagebuild.atomic", "imagebuild.frozen", "imagebuild.progress", "imagebuild.contract",
              "imagebuild.launcher")),
    ("oci", ("imagebuild.oci",)),
    ("sources", ("imagebuild.sources",)),
    ("recipe", ("imagebuild.recipe",)),
    ("plan", ("imagebuild.plan",)),
    ("registry", ("imagebuild.registry",)),
    ("stores", ("imagebuild.stores",)),
    ("build", ("imagebuild.build",)),
    ("evidence", ("imagebuild.evidence",)),
    ("publish", ("imagebuild.publish",)),
    ("release", ("imagebuild.release",)),
    ("cli", ("imagebuild.cli", "imagebuild.__main__")),
]

# (importer, imported): upward imports allowed by name. Keep this empty: move the code instead.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


def rank_of(module: str) -> int:
    best, found = -1, None
    for index, (_, prefixes) in enumerate(RANKS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found is not None, f"{module} has no rank in tests/test_architecture.py RANKS"
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(dotted: str) -> bool:
    base = PACKAGE.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every module PATH imports (top-level, in functions, under TYPE_CHECKING), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:      # `from imagebuild.cli import bake_cmd` imports a module
                sub = f"{node.module}.{alias.name}"
                found.append((sub if is_module(sub) else node.module, node.lineno))
    return found


MODULES = sorted((module_name(path), path) for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)


def test_every_module_has_a_rank():
    for name, _ in MODULES:
        rank_of(name)


def test_no_module_imports_from_a_higher_rank_or_another_folder_of_its_rank():
    found = set()
    problems = []
    for name, path in MODULES:
        own = rank_of(name)
        for target, line in imports_of(path):
            if not target.startswith("imagebuild") or target.startswith("imagebuild_runtime"):
                continue
            if rank_of(target) <= own:
                continue
            if (name, target) in KNOWN_VIOLATIONS:
                found.add((name, target))
                continue
            problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name} ({RANKS[own][0]}) imports "
                            f"{target} ({RANKS[rank_of(target)][0]})")
    assert not problems, "upward imports:\n" + "\n".join(problems)
    assert found == set(KNOWN_VIOLATIONS), f"fixed, remove from KNOWN_VIOLATIONS: {set(KNOWN_VIOLATIONS) - found}"


def test_only_cli_imports_typer():
    problems = [f"{path.relative_to(PACKAGE.parent)}:{line}" for name, path in MODULES
                if rank_of(name) != rank_of("imagebuild.cli")
                for target, line in imports_of(path) if target.split(".")[0] in ("typer", "click")]
    assert not problems, "typer or click outside imagebuild/cli/:\n" + "\n".join(problems)


@pytest.mark.parametrize("name,path", [(n, p) for n, p in MODULES if n.endswith("_cmd")], ids=lambda v: str(v))
def test_a_command_module_imports_no_other_cli_module_but_common(name, path):
    others = [f"line {line}: {target}" for target, line in imports_of(path)
              if target.startswith("imagebuild.cli") and target != "imagebuild.cli.common"]
    assert not others, f"{name} imports other cli modules (shared code goes in cli/common.py):\n" + "\n".join(others)


def test_package_init_files_hold_no_code():
    for name, path in MODULES:
        if path.name != "__init__.py":
            continue
        body = ast.parse(path.read_text()).body
        code = [node for node in body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
                and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
                and not (isinstance(node, ast.Assign) and all(isinstance(target, ast.Name) and target.id.startswith("__")
                                                              for target in node.targets))]  # __version__
        assert not code, f"{path.relative_to(PACKAGE.parent)} holds code; move it to a named module"


# -- one way to copy an image -------------------------------------------------------------
# Images move between places (the local layout, a registry repository, memory) only through
# stores/copy.py. Two rules keep a second copy from growing back:
#  1. only stores/copy.py defines a function or method named copy*, transfer* or send_image*;
#  2. outside stores/copy.py, no function both reads a blob from one object and writes a blob to
#     another: a blob read is a call of `.open_blob(`, `.read_blob(` or `.blob_chunks(`, a blob write a call of
#     `.put_blob(`, `.put_blob_stream(`, `.blob_writer(` or `.upload_blob(`, and the objects are
#     compared by their source text (`self.store` reading and writing itself is no copy).
#     Sinks that are not places (a docker-archive, the engine's load) read blobs and write no blob.
COPY_MODULE = "imagebuild.stores.copy"
COPY_NAMES = ("copy", "transfer", "send_image")
BLOB_READS = {"open_blob", "read_blob", "blob_chunks"}
BLOB_WRITES = {"put_blob", "put_blob_stream", "blob_writer", "upload_blob"}


def _functions(tree: ast.AST):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _blob_calls(function: ast.AST, methods: set[str]) -> set[str]:
    """The receivers (as source text) of calls of `methods` in `function`, nested functions included."""
    return {ast.unparse(node.func.value) for node in ast.walk(function)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in methods}


def test_only_stores_copy_defines_image_copying_by_name():
    found = [f"{path.relative_to(PACKAGE.parent)}:{function.lineno}: {function.name}" for name, path in MODULES
             if name != COPY_MODULE for function in _functions(ast.parse(path.read_text()))
             if function.name.lstrip("_").startswith(COPY_NAMES)]
    assert not found, "image copying lives in stores/copy.py; rename or move:\n" + "\n".join(found)


def test_only_stores_copy_reads_a_blob_from_one_place_and_writes_it_to_another():
    found = []
    for name, path in MODULES:
        if name == COPY_MODULE:
            continue
        for function in _functions(ast.parse(path.read_text())):
            reads, writes = _blob_calls(function, BLOB_READS), _blob_calls(function, BLOB_WRITES)
            if reads and writes and (reads | writes) != reads & writes:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{function.lineno}: {function.name} reads "
                             f"blobs from {sorted(reads)} and writes them to {sorted(writes)}")
    assert not found, "blobs move between places only through stores.copy.copy:\n" + "\n".join(found)


def test_the_copy_rules_catch_a_second_copy():
    """The rules above must be able to fail: the deleted layout-to-layout copy is caught by both."""
    second = ast.parse(
        "def copy_image(source, target, digest):\n"
        "    with source.open_blob(digest) as reader, target.blob_writer() as writer:\n"
        "        writer.write(reader.read())\n")
    (function,) = _functions(second)
    assert function.name.lstrip("_").startswith(COPY_NAMES)
    reads, writes = _blob_calls(function, BLOB_READS), _blob_calls(function, BLOB_WRITES)
    assert reads == {"source"} and writes == {"target"}
