"""A JVM app's build output sorted into Jib's groups, the recipe's `java:` rules, and the JVM's
command line. Jars are written here with zipfile: no JDK needed."""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import replace

import pytest

from imagebuild.errors import RecipeError, UserError
from imagebuild.recipe.loader import load_recipe
from imagebuild.recipe.templates import server_command
from imagebuild.sources.java_build import read_build_output
from tests.bake_support import EXAMPLES


def write_recipe(tmp_path, java: str):
    (tmp_path / "imagebuild.yaml").write_text(f"name: j\nextends: java-jar\njava:\n{java}")
    return load_recipe(tmp_path)


def write_jar(path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as jar:
        for name, data in entries.items():
            jar.writestr(name, data)


def test_a_spring_boot_jar_is_split_into_release_snapshot_resources_and_classes(tmp_path):
    recipe = write_recipe(tmp_path, "  jar: app.jar\n")
    write_jar(tmp_path / "app.jar", {
        "META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\r\nMain-Class: org.springframework.boot.loader.Jar\r\n"
                                b"Start-Class: com.example.Applicat\r\n ion\r\n",
        "org/springframework/boot/loader/JarLauncher.class": b"loader",
        "BOOT-INF/lib/spring-core-6.1.0.jar": b"release",
        "BOOT-INF/lib/shared-2.0-SNAPSHOT.jar": b"snapshot",
        "BOOT-INF/classes/com/example/Application.class": b"class",
        "BOOT-INF/classes/application.properties": b"a=1\n",
    })
    parts = read_build_output(recipe.root, recipe.java, tmp_path / "scratch")
    assert [f.path for f in parts.release] == ["spring-core-6.1.0.jar"]
    assert [f.path for f in parts.snapshots] == ["shared-2.0-SNAPSHOT.jar"]
    assert [f.path for f in parts.resources] == ["application.properties"]
    assert [f.path for f in parts.classes] == ["com/example/Application.class"]
    assert parts.main_class == "com.example.Application"   # Start-Class, its wrapped line joined
    assert server_command(recipe, parts.main_class) == [
        "java", "-XX:MaxRAMPercentage=75.0", "-cp", "/app/resources:/app/classes:/app/libs/*",
        "com.example.Application"]


def test_a_jar_entry_that_leaves_the_jar_is_refused(tmp_path):
    recipe = write_recipe(tmp_path, "  jar: app.jar\n  main_class: a.B\n")
    write_jar(tmp_path / "app.jar", {"../../etc/evil": b"x"})
    with pytest.raises(UserError, match="outside the jar"):
        read_build_output(recipe.root, recipe.java, tmp_path / "scratch")


def _jar_refusal(tmp_path, write) -> str:
    recipe = write_recipe(tmp_path, "  jar: app.jar\n  main_class: a.B\n")
    with zipfile.ZipFile(tmp_path / "app.jar", "w", zipfile.ZIP_DEFLATED) as jar:
        write(jar)
    with pytest.raises(UserError) as refused:
        read_build_output(recipe.root, recipe.java, tmp_path / "scratch")
    assert not (tmp_path / "scratch" / "exploded").exists(), "a refused jar left files behind"
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()
    return refused.value.one_line()


def _symlink(jar):
    link = zipfile.ZipInfo("BOOT-INF/classes/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    jar.writestr(link, "/etc/passwd")


def _duplicate(jar):
    jar.writestr("a/B.class", b"first")
    with pytest.warns(UserWarning, match="Duplicate name"):
        jar.writestr("a/B.class", b"second")


def _bomb(jar):
    jar.writestr("BOOT-INF/classes/zeros.bin", bytes(64 * 1024 * 1024))   # 64 MiB packing to some 64 KiB


@pytest.mark.parametrize("write, entry, message", [
    (lambda jar: jar.writestr("/etc/evil", b"x"), "'/etc/evil'", "points outside the jar"),
    (lambda jar: jar.writestr("a/../../evil", b"x"), "'a/../../evil'", "points outside the jar"),
    (lambda jar: jar.writestr("C:/evil", b"x"), "'C:/evil'", "points outside the jar"),
    (_symlink, "'BOOT-INF/classes/link'", "is a symbolic link"),
    (_duplicate, "'a/B.class'", "is in the jar twice"),
    (lambda jar: (jar.writestr("a", b"x"), jar.writestr("a/b", b"y")), "'a/b'", "both a file and a directory"),
    (_bomb, "'BOOT-INF/classes/zeros.bin'", "(a zip bomb)"),
], ids=["absolute", "dot-dot", "drive", "symlink", "duplicate", "file-and-directory", "bomb"])
def test_a_hostile_jar_entry_is_refused_by_name_and_nothing_is_left(tmp_path, write, entry, message):
    line = _jar_refusal(tmp_path, write)
    assert line.startswith(f"java.jar: app.jar: entry {entry}") and message in line, line


def test_a_jar_past_the_size_and_count_bounds_is_refused(tmp_path, monkeypatch):
    from imagebuild.sources import java_build

    monkeypatch.setattr(java_build, "MAX_TOTAL_BYTES", 1000)
    assert "takes the unpacked jar over 1000 bytes" in _jar_refusal(
        tmp_path, lambda jar: [jar.writestr(f"r{i}.txt", os.urandom(300)) for i in range(4)])
    monkeypatch.setattr(java_build, "MAX_ENTRY_BYTES", 100)
    assert "unpacks to 300 bytes, over 100" in _jar_refusal(tmp_path, lambda jar: jar.writestr("r.txt", os.urandom(300)))
    monkeypatch.setattr(java_build, "MAX_JAR_ENTRIES", 3)
    assert "has 4 entries, more than 3" in _jar_refusal(
        tmp_path, lambda jar: [jar.writestr(f"r{i}", b"") for i in range(4)])


def test_an_entry_that_holds_more_than_it_declares_is_refused(tmp_path):
    # The header says 10 bytes; the data holds 1 MiB more. Stored, so nothing checks a CRC before the end.
    recipe = write_recipe(tmp_path, "  jar: app.jar\n  main_class: a.B\n")
    with zipfile.ZipFile(tmp_path / "app.jar", "w") as jar:
        jar.writestr("big.txt", bytes(1024 * 1024))
    raw = bytearray((tmp_path / "app.jar").read_bytes())
    size = (1024 * 1024).to_bytes(4, "little")
    raw[raw.index(size, 0):raw.index(size, 0) + 4] = (10).to_bytes(4, "little")     # the local header's size
    central = raw.rindex(size)
    raw[central:central + 4] = (10).to_bytes(4, "little")                            # the central directory's
    (tmp_path / "app.jar").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="app.jar") as refused:
        read_build_output(recipe.root, recipe.java, tmp_path / "scratch")
    assert refused.value.exit_code == 2
    assert not (tmp_path / "scratch" / "exploded").exists()


def test_a_dependency_jar_that_is_a_symbolic_link_is_refused(tmp_path):
    recipe = write_recipe(tmp_path, "  classes: classes\n  dependencies: libs\n  main_class: a.B\n")
    (tmp_path / "classes").mkdir()
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "secret.jar").symlink_to("/etc/passwd")
    with pytest.raises(UserError, match="secret.jar is a symbolic link"):
        read_build_output(recipe.root, recipe.java, tmp_path / "scratch")


def test_missing_build_output_says_to_build_first(tmp_path):
    recipe = write_recipe(tmp_path, "  classes: target/classes\n  main_class: a.B\n")
    with pytest.raises(UserError, match="target/classes does not exist") as caught:
        read_build_output(recipe.root, recipe.java, tmp_path / "scratch")
    assert "mvn package" in (caught.value.hint or "")


def test_a_separate_resources_tree_wins_over_the_copy_among_the_classes(tmp_path):
    recipe = write_recipe(tmp_path, "  classes: out/classes\n  resources: out/resources\n  main_class: a.B\n")
    (tmp_path / "out/classes/a").mkdir(parents=True)
    (tmp_path / "out/classes/a/B.class").write_bytes(b"class")
    (tmp_path / "out/classes/app.properties").write_text("old\n")
    (tmp_path / "out/resources").mkdir(parents=True)
    (tmp_path / "out/resources/app.properties").write_text("new\n")
    parts = read_build_output(recipe.root, recipe.java, tmp_path / "scratch")
    assert [(f.path, f.source.read_text()) for f in parts.resources] == [("app.properties", "new\n")]


@pytest.mark.parametrize("java, message", [
    ("  classes: target/classes\n", "needs the class to start"),
    ("  jar: a.jar\n  classes: target/classes\n  main_class: a.B\n", "either java.jar"),
    ("  jar: a.jar\n  dependencies: lib\n", "brings its own dependencies"),
    ("  jar: a.jar\n  main_class: 'a;b'\n", "not a Java class name"),
    ("  jar: ../outside.jar\n", "outside"),
])
def test_java_section_rules(tmp_path, java, message):
    with pytest.raises(RecipeError, match=message):
        write_recipe(tmp_path, java)


def test_the_jvm_gets_a_container_aware_heap_unless_the_options_size_it():
    recipe = load_recipe(EXAMPLES / "java-hello")
    assert server_command(recipe) == ["java", "-XX:MaxRAMPercentage=75.0", "-jar", "/app/app.jar"]
    sized = replace(recipe, server=replace(recipe.server, options={"java_options": "-XX:MaxRAMPercentage=50"}))
    assert server_command(sized) == ["java", "-XX:MaxRAMPercentage=50", "-jar", "/app/app.jar"]
