"""A JVM app's build output, sorted into the four groups Jib layers separately.

The build tool (Maven, Gradle) makes the output; this module only reads it
from the work tree: a directory of dependency jars plus classes and resources
directories, or one fat jar, which is exploded first (Spring Boot's layout:
BOOT-INF/lib and BOOT-INF/classes; a plain jar's own entries are its classes
and resources). The groups, from rarely to often changed:

- release dependencies: the jars whose name does not end in -SNAPSHOT.jar,
- snapshot dependencies: the ones that do (rebuilt by every upstream build),
- resources: every file of the classes tree that is not a .class, and the resources tree,
- classes: the .class files.

Each file keeps its path below its group's directory in the image
(<app.dest>/libs, /resources, /classes), so `java -cp resources:classes:libs/*`
finds them all.
"""

from __future__ import annotations

import os
import posixpath
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from imagebuild.errors import UserError

SNAPSHOT_SUFFIX = "-SNAPSHOT.jar"
LIBS, RESOURCES, CLASSES = "libs", "resources", "classes"
BOOT_LIB, BOOT_CLASSES = "BOOT-INF/lib/", "BOOT-INF/classes/"
# A jar's own bookkeeping: the manifest names the main class, signatures sign the jar itself.
_JAR_METADATA = ("META-INF/MANIFEST.MF", "META-INF/INDEX.LIST")
_SIGNATURES = (".SF", ".RSA", ".DSA", ".EC")
MAX_JAR_ENTRIES = 200_000


class BuildOutput(Protocol):
    """Where the build put its output (the recipe's `java:` section, recipe/model.JavaSpec)."""

    jar: str | None
    dependencies: str | None
    classes: str | None
    resources: str | None
    main_class: str | None


@dataclass(frozen=True)
class JavaFile:
    path: str       # below its group's directory in the image
    source: Path    # the file on disk


@dataclass(frozen=True)
class JavaParts:
    release: tuple[JavaFile, ...]
    snapshots: tuple[JavaFile, ...]
    resources: tuple[JavaFile, ...]
    classes: tuple[JavaFile, ...]
    main_class: str


def _missing(key: str, value: str) -> UserError:
    return UserError(f"java.{key}: {value} does not exist", hint="build the app first (e.g. `mvn package` or "
                                                                  "`gradle build`), then bake")


def _files_under(root: Path) -> list[tuple[str, Path]]:
    """(relative posix path, file) of every regular file below `root`, sorted; symlinks are refused
    (they could point out of the build output)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_symlink():
                raise UserError(f"{full} is a symbolic link; the build output must hold plain files")
            found.append((full.relative_to(root).as_posix(), full))
    return found


def _split_tree(root: Path) -> tuple[list[JavaFile], list[JavaFile]]:
    """(classes, resources) of a classes tree: .class files, and everything else."""
    classes, resources = [], []
    for rel, full in _files_under(root):
        (classes if rel.endswith(".class") else resources).append(JavaFile(rel, full))
    return classes, resources


def _jars(directory: Path) -> tuple[list[JavaFile], list[JavaFile]]:
    """(release, snapshot) jars directly in `directory`."""
    release, snapshots = [], []
    for entry in sorted(directory.iterdir()):
        if entry.name.endswith(".jar") and entry.is_file():
            (snapshots if entry.name.endswith(SNAPSHOT_SUFFIX) else release).append(JavaFile(entry.name, entry))
    return release, snapshots


def _manifest_main(jar: zipfile.ZipFile) -> str | None:
    try:
        text = jar.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
    except KeyError:
        return None
    # Manifest lines are wrapped at 72 bytes; a continuation line starts with one space.
    attributes = {}
    for line in text.replace("\r\n", "\n").replace("\n ", "").splitlines():
        name, _, value = line.partition(":")
        attributes[name.strip()] = value.strip()
    return attributes.get("Start-Class") or attributes.get("Main-Class")


def _explode(jar_path: Path, target: Path) -> str | None:
    """Unpack the jar's regular files into `target` (checked: no entry may leave it); its main class."""
    try:
        with zipfile.ZipFile(jar_path) as jar:
            members = jar.infolist()
            if len(members) > MAX_JAR_ENTRIES:
                raise UserError(f"java.jar: {jar_path.name} has more than {MAX_JAR_ENTRIES} entries")
            for member in members:
                name = member.filename
                parts = PurePosixPath(name).parts
                if name.startswith("/") or ".." in parts or "\\" in name:
                    raise UserError(f"java.jar: {jar_path.name} has an entry outside the jar ({name[:80]!r})")
                if member.is_dir():
                    continue
                destination = target / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                with jar.open(member) as source, open(destination, "wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
            return _manifest_main(jar)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"java.jar: {jar_path.name} is not a readable jar ({exc})") from None


def _from_jar(jar_path: Path, scratch: Path) -> tuple[list[JavaFile], list[JavaFile], list[JavaFile],
                                                       list[JavaFile], str | None]:
    exploded = scratch / "exploded"
    main = _explode(jar_path, exploded)
    if (exploded / BOOT_CLASSES).is_dir() or (exploded / BOOT_LIB).is_dir():
        # Spring Boot: the loader classes at the root are not needed when the JVM starts Start-Class itself.
        release, snapshots = _jars(exploded / BOOT_LIB) if (exploded / BOOT_LIB).is_dir() else ([], [])
        classes, resources = _split_tree(exploded / BOOT_CLASSES) if (exploded / BOOT_CLASSES).is_dir() else ([], [])
        return release, snapshots, classes, resources, main
    classes, resources = _split_tree(exploded)
    resources = [item for item in resources if item.path not in _JAR_METADATA
                 and not (item.path.startswith("META-INF/") and item.path.endswith(_SIGNATURES))]
    return [], [], classes, resources, main


def read_build_output(root: Path, spec: BuildOutput, scratch: Path) -> JavaParts:
    """The build output `spec` names (paths relative to `root`), sorted into Jib's four groups."""
    main = None
    if spec.jar is not None:
        jar_path = root / spec.jar
        if not jar_path.is_file():
            raise _missing("jar", spec.jar)
        release, snapshots, classes, resources, main = _from_jar(jar_path, scratch)
    else:
        assert spec.classes is not None
        classes_dir = root / spec.classes
        if not classes_dir.is_dir():
            raise _missing("classes", spec.classes)
        classes, resources = _split_tree(classes_dir)
        release, snapshots = [], []
        if spec.dependencies is not None:
            if not (root / spec.dependencies).is_dir():
                raise _missing("dependencies", spec.dependencies)
            release, snapshots = _jars(root / spec.dependencies)
    if spec.resources is not None:
        if not (root / spec.resources).is_dir():
            raise _missing("resources", spec.resources)
        # The resources tree wins over a copy the build left among the classes.
        own = {rel: JavaFile(rel, full) for rel, full in _files_under(root / spec.resources)}
        resources = [item for item in resources if item.path not in own] + list(own.values())
    main_class = spec.main_class or main
    if not main_class:
        raise UserError("no main class: the jar's manifest names none", hint="set java.main_class")
    return JavaParts(release=tuple(release), snapshots=tuple(snapshots),
                     resources=tuple(sorted(resources, key=lambda item: item.path)),
                     classes=tuple(classes), main_class=main_class)


def classpath(app_dest: str) -> str:
    """The JVM's -cp for the layered app: resources first, so they can override packaged defaults."""
    return ":".join([posixpath.join(app_dest, RESOURCES), posixpath.join(app_dest, CLASSES),
                     posixpath.join(app_dest, LIBS, "*")])
