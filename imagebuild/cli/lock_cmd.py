"""`imagebuild lock [PATH]`: refresh imagebuild.lock, the exact Debian packages and Python closure.

Only what is out of date is resolved: the Debian pins when the os/runtime
sections changed (or there are none), the Python closure when the
requirements changed. With nothing changed nothing is rewritten. `--upgrade`
resolves both afresh; `--check` (for CI) only says whether the lock is stale.
A Node app's libraries are pinned by npm's package-lock.json itself: it is
checked (an integrity hash per package, in step with package.json), never written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from imagebuild.cli.common import JsonOption, emit_json, say
from imagebuild.errors import RecipeError, UserError


def lock_command(path: Path = typer.Argument(Path("."), help="The app directory holding imagebuild.yaml, or the file."),
                 check: bool = typer.Option(False, "--check", help="Write nothing; exit 2 naming what is stale, "
                                                                   "0 when the lock is up to date."),
                 upgrade: bool = typer.Option(False, "--upgrade", help="Resolve everything afresh: the newest "
                                                                       "Debian packages and Python closure."),
                 json_out: bool = JsonOption) -> None:
    """Resolve what is out of date in imagebuild.lock (Debian packages, Python closure) and write it."""
    from imagebuild.build.layers.lock_freshness import lacks_records, lock_fits, python_lock_fits, requirements_bytes
    from imagebuild.recipe.loader import load_recipe
    from imagebuild.sources.lockfile import lock_path_for, platform_lock, read_lock, write_lock
    recipe = load_recipe(path)
    if recipe.os.image is not None:
        # The digest in os.image already pins every byte of such a base; there is nothing to resolve.
        raise RecipeError("os.image names a base image, pinned by its digest; imagebuild.lock is only for os.debian",
                          file=str(recipe.source), key="os.image",
                          hint="nothing to lock: bake without imagebuild.lock")
    target = lock_path_for(recipe.source)
    whole = read_lock(target)
    requirements = requirements_bytes(recipe, lambda file: file.read_bytes() if file.is_file() else None)
    # One lock per platform's image: a recipe of several platforms locks each architecture.
    recipes = [recipe.for_architecture(architecture) for architecture in recipe.architectures] \
        if recipe.multi_platform else [recipe]
    befores = [whole.for_architecture(one.os.architecture) if whole is not None and recipe.multi_platform else whole
               for one in recipes]
    debian_stale = python_stale = False
    for one, before in zip(recipes, befores):
        debian_stale = debian_stale or upgrade or before is None or not lock_fits(before, one.os, one.runtime)
    # pins that fit, but no dpkg records beside them (a lock made before they were kept): filled in, pins kept
    records_missing = not debian_stale and any(lacks_records(before, one.runtime)
                                               for one, before in zip(recipes, befores))
    for one, before in zip(recipes, befores):
        if requirements is None:
            python_stale = python_stale or (before is not None and before.python is not None)
        else:
            python_stale = python_stale or upgrade or not python_lock_fits(before, one, requirements)
    npm_problem = _npm_problem(recipe)
    stale = [what for what, is_stale in (("the Debian inputs (os/runtime sections)", debian_stale),
                                         ("the Python requirements", python_stale)) if is_stale]
    if npm_problem is not None:
        if not check:
            raise npm_problem   # npm writes package-lock.json, not imagebuild
        stale.append(f"the npm lock ({npm_problem.message})")
    if check:
        if records_missing and not stale:     # a stale lock is resolved afresh, records and all
            stale.append("records")
        if json_out and not stale:
            # a stale lock is an error, and with --json the error is the one object printed
            emit_json({"lock": str(target), "fresh": True, "stale": []})
        if npm_problem is not None and len(stale) == 1:
            raise npm_problem
        if stale == ["records"]:
            raise UserError(f"{target} has no package records: the SBOM of a bake that borrows its base layers "
                            f"from the registry would download them", hint="run `imagebuild lock` and commit it")
        if stale:
            raise UserError(f"{target} is out of date with {' and '.join(stale)}",
                            hint="run `imagebuild lock` and commit it")
        if not json_out:
            typer.echo(f"{target} is up to date")
        return
    closures = _closures(recipes, befores, requirements, upgrade, recipe.multi_platform)
    locks = {}
    for one, before in zip(recipes, befores):
        locks[one.os.architecture] = _lock_one(one, before, closures[one.os.architecture], upgrade,
                                               f" (linux/{one.os.architecture})" if recipe.multi_platform else "")
    lock = platform_lock(locks, recipe.architectures) if recipe.multi_platform else locks[recipe.os.architecture]
    if lock is not None and (whole is None or lock.to_dict() != whole.to_dict()):
        write_lock(target, lock)
    assert lock is not None
    closure = len(lock.python.packages) if lock.python is not None else 0
    summary = {"lock": str(target), "os_packages": len(lock.os), "runtime_packages": len(lock.runtime),
               "python_packages": closure, "source_date_epoch": lock.source_date_epoch,
               "resolved": [name for name, done in (("debian", debian_stale), ("python", python_stale)) if done],
               "records_added": records_missing}
    if json_out:
        emit_json(summary)
    elif records_missing and not stale:
        typer.echo(f"wrote {target}: added the package records of its {len(lock.os)} OS and "
                   f"{len(lock.runtime)} runtime packages, every pin as it was; commit it")
    elif not stale:
        typer.echo(f"{target} is up to date; nothing resolved")
    else:
        typer.echo(f"wrote {target}: {len(lock.os)} OS packages, {len(lock.runtime)} runtime packages, "
                   f"{closure} Python distributions; commit it")


def _npm_problem(recipe) -> UserError | None:
    """Why package-lock.json cannot pin the Node libraries (None when it can, or there is none).

    npm's lock is the pin itself, so there is nothing to resolve into imagebuild.lock: it only
    has to exist, carry an integrity hash for every package and match package.json."""
    if recipe.libraries.package_lock is None:
        return None
    from imagebuild.sources.npm_lock import MAX_LOCK_BYTES, MAX_PACKAGE_JSON_BYTES, checked_npm_lock

    lock_file = recipe.root / recipe.libraries.package_lock
    package_json = lock_file.parent / "package.json"
    try:
        checked_npm_lock(_read_at_most(package_json, MAX_PACKAGE_JSON_BYTES),
                         _read_at_most(lock_file, MAX_LOCK_BYTES), recipe.libraries.package_lock)
    except UserError as exc:
        return exc
    return None


def _read_at_most(path: Path, limit: int) -> bytes | None:
    """The file's bytes, one past `limit` at most (enough for the check to refuse it); None when absent."""
    if not path.is_file():
        return None
    with open(path, "rb") as stream:
        return stream.read(limit + 1)


def _closures(recipes, befores, requirements: bytes | None, upgrade: bool, multi_platform: bool) -> dict:
    """Each platform's Python closure: the lock's where its inputs still match, else pip's.

    pip waits mostly on the package index, so the platforms that need it run side by side."""
    from concurrent.futures import ThreadPoolExecutor

    from imagebuild.build.layers.lock_freshness import python_lock_fits

    closures, stale = {}, []
    for one, before in zip(recipes, befores):
        if requirements is None:
            closures[one.os.architecture] = None
        elif upgrade or not python_lock_fits(before, one, requirements):
            stale.append(one)
        else:
            closures[one.os.architecture] = before.python
    for one in stale:
        say(f"resolving the Python closure for {one.name}"
            f"{f' (linux/{one.os.architecture})' if multi_platform else ''} ...")
    if stale:
        from imagebuild.build.layers.libraries import lock_python
    if len(stale) == 1:
        closures[stale[0].os.architecture] = lock_python(stale[0], requirements)
    elif stale:
        with ThreadPoolExecutor(max_workers=len(stale)) as pool:
            for one, closure in zip(stale, pool.map(lambda one: lock_python(one, requirements), stale)):
                closures[one.os.architecture] = closure
    return closures


def _lock_one(recipe, before, python, upgrade: bool, what: str):
    """One platform's lock: its Debian pins resolved afresh when out of date, else kept; `python` its closure."""
    from imagebuild.build.layers.lock_freshness import lacks_records, lock_fits

    if upgrade or before is None or not lock_fits(before, recipe.os, recipe.runtime):
        from imagebuild.build.layers.debian import resolve_lock

        say(f"resolving Debian {recipe.os.debian} packages for {recipe.name}{what} ...")
        return resolve_lock(recipe.os, recipe.runtime, python=python)
    if lacks_records(before, recipe.runtime):
        from imagebuild.build.layers.debian import fill_records

        say(f"adding the package records to the Debian {recipe.os.debian} pins of {recipe.name}{what} ...")
        before = fill_records(recipe.os, recipe.runtime, before)
    return replace(before, python=python, platforms={})
