"""A JVM app's build output sorted into Jib's groups, the recipe's `java:` rules, and the JVM's
command line. Jars are written here with zipfile: no JDK needed."""

from __future__ import annotations

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
