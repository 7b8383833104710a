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
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from imagebuild.errors import UserError, quoted

SNAPSHOT_SUFFIX = "-SNAPSHOT.jar"
LIBS, RESOURCES, CLASSES = "libs", "resources", "classes"
BOOT_LIB, BOOT_CLASSES = "BOOT-INF/lib/", "BOOT-INF/classes/"
# A jar's own bookkeeping: the manifest names the main class, signatures sign the jar itself.
_JAR_METADATA = ("META-INF/MANIFEST.MF", "META-INF/INDEX.LIST")
_SIGNATURES = (".SF", ".RSA", ".DSA", ".EC")
# Bounds on unpacking a jar, whose headers its maker wrote: an app's jar is some hundred MiB of some
# thousand entries, and compresses a few times at most; a zip bomb declares far more, or lies.
MAX_JAR_ENTRIES = 200_000
MAX_ENTRY_BYTES = 1024 ** 3
MAX_TOTAL_BYTES = 4 * 1024 ** 3
MAX_RATIO = 200                  # unpacked bytes per packed byte, for entries past RATIO_FROM_BYTES
RATIO_FROM_BYTES = 1024 ** 2


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
        if entry.name.endswith(".jar") and entry.is_symlink():
            raise UserError(f"{entry} is a symbolic link; the build output must hold plain files")
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


def _refused(jar_path: Path, name: str, what: str) -> UserError:
    return UserError(f"java.jar: {jar_path.name}: entry {quoted(name)} {what}",
                     hint="rebuild the jar with Maven or Gradle; imagebuild unpacks only plain files")


def _checked_members(jar_path: Path, jar: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The jar's entries to unpack, every one checked before a byte is written: its name stays below the
    jar's directory and is given once, it is a file or a directory (no link, no device), and the sizes
    it declares stay within the bounds (a zip bomb declares them, or is caught in `_unpack`)."""
    members = jar.infolist()
    if len(members) > MAX_JAR_ENTRIES:
        raise UserError(f"java.jar: {jar_path.name} has {len(members)} entries, more than {MAX_JAR_ENTRIES}",
                        hint="a jar of an app holds some thousand; rebuild it")
    seen: set[str] = set()
    total = 0
    for member in members:
        name = member.filename
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts or "\\" in name or "\0" in name \
                or parts[0].endswith(":"):
            raise _refused(jar_path, name, "points outside the jar")
        kind = stat.S_IFMT(member.external_attr >> 16)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            what = "a symbolic link" if kind == stat.S_IFLNK else "no plain file or directory"
            raise _refused(jar_path, name, f"is {what}")
        normal = "/".join(parts)
        if normal in seen:
            raise _refused(jar_path, name, "is in the jar twice")
        seen.add(normal)
        if member.is_dir():
            continue
        if member.file_size > MAX_ENTRY_BYTES:
            raise _refused(jar_path, name, f"unpacks to {member.file_size} bytes, over {MAX_ENTRY_BYTES}")
        if member.file_size > RATIO_FROM_BYTES and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise _refused(jar_path, name, f"unpacks {member.file_size // max(member.compress_size, 1)} times its "
                                           f"packed size, over {MAX_RATIO} (a zip bomb)")
        total += member.file_size
        if total > MAX_TOTAL_BYTES:
            raise _refused(jar_path, name, f"takes the unpacked jar over {MAX_TOTAL_BYTES} bytes")
    return members


def _unpack(jar_path: Path, jar: zipfile.ZipFile, member: zipfile.ZipInfo, destination: Path) -> None:
    """One entry streamed to `destination`, stopped at the size it declared (the zip module stops there
    too; counted here so that no lying header can make it write more)."""
    written = 0
    with jar.open(member) as source, open(destination, "xb") as out:
        while chunk := source.read(1 << 20):
            written += len(chunk)
            if written > member.file_size:
                raise _refused(jar_path, member.filename, "holds more bytes than it declares")
            out.write(chunk)


def _explode(jar_path: Path, target: Path) -> str | None:
    """Unpack the jar's regular files into `target` (checked: no entry may leave it, nor be a link, nor
    unpack beyond the bounds); its main class. A refused jar leaves nothing of `target` behind."""
    try:
        with zipfile.ZipFile(jar_path) as jar:
            for member in _checked_members(jar_path, jar):
                if member.is_dir():
                    continue
                destination = target / member.filename
                try:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    _unpack(jar_path, jar, member, destination)
                except (FileExistsError, NotADirectoryError, IsADirectoryError):
                    raise _refused(jar_path, member.filename, "is both a file and a directory in the jar") from None
            return _manifest_main(jar)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
            zlib.error) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise UserError(f"java.jar: {jar_path.name} is not a readable jar ({exc})") from None
    except UserError:
        shutil.rmtree(target, ignore_errors=True)
        raise


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
