"""Multi-platform recipes, locks and indexes: the pure parts (no mmdebstrap, no registry)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from imagebuild.build.layers.libraries import pip_platforms
from imagebuild.errors import RecipeError, UserError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import Descriptor, Image, Platform, host_platform, image_index, parse_index, platform_child
from imagebuild.recipe.loader import load_recipe
from imagebuild.sources.lockfile import DebianLock, PythonLock, PythonPackage, dumps, parse_lock, platform_lock
from imagebuild.stores.layout import LayoutStore
from test_recipe_loader import MINIMAL as RECIPE, NO_GIT


def load(tmp_path: Path, extra: str = ""):
    path = tmp_path / "imagebuild.yaml"
    path.write_text(RECIPE + textwrap.dedent(extra))
    return load_recipe(path, context=NO_GIT)


def error(tmp_path: Path, extra: str) -> str:
    with pytest.raises(RecipeError) as caught:
        load(tmp_path, extra)
    line = caught.value.one_line()
    assert "\n" not in line
    return line


# -- the recipe key -------------------------------------------------------------


def test_without_platforms_one_amd64_image_as_before(tmp_path):
    recipe = load(tmp_path)
    assert recipe.platforms == () and recipe.architectures == ("amd64",) and not recipe.multi_platform


def test_two_platforms_in_order(tmp_path):
    recipe = load(tmp_path, "platforms: [linux/arm64, linux/amd64]\n")
    assert recipe.architectures == ("arm64", "amd64") and recipe.multi_platform
    arm = recipe.for_architecture("arm64")
    assert arm.os.architecture == "arm64" and arm.platforms == () and not arm.multi_platform
    assert pip_platforms(arm) == ["manylinux_2_36_aarch64", "manylinux2014_aarch64"]


def test_one_platform_is_a_plain_image_of_it(tmp_path):
    recipe = load(tmp_path, "platforms: [linux/arm64]\n")
    assert recipe.os.architecture == "arm64" and not recipe.multi_platform


@pytest.mark.parametrize("extra, fragments", [
    ("platforms: [linux/s390x]\n", ("platforms[0]", "'linux/s390x' is not a platform imagebuild bakes",
                                    "linux/amd64 or linux/arm64")),
    ("platforms: [linux/arm46]\n", ("platforms[0]", "did you mean 'linux/arm64'")),
    ("platforms: [arm64]\n", ("platforms[0]", "'arm64' is not a platform")),
    ("platforms: [linux/amd64, linux/amd64]\n", ("platforms[1]", "linux/amd64 is listed twice")),
    ("platforms: []\n", ("platforms", "lists no platform")),
    ("platforms: linux/amd64\n", ("platforms",)),
    ("platforms: [linux/arm64]\nos:\n  architecture: arm64\n",
     ("os.architecture", "set either platforms or os.architecture, not both")),
])
def test_bad_platforms_are_one_line(tmp_path, extra, fragments):
    line = error(tmp_path, extra)
    for fragment in fragments:
        assert fragment in line, line


# -- the lock, per architecture -------------------------------------------------------


def _lock(architecture: str, version: str) -> DebianLock:
    wheel = PythonPackage("markupsafe", "3.0.2", f"markupsafe-3.0.2-{architecture}.whl", version * 8)
    return DebianLock(inputs={"architecture": architecture, "suite": "bookworm"}, source_date_epoch=7,
                      os={"libc6": version}, runtime={"python3.11": version},
                      python=PythonLock({"platforms": [f"manylinux2014_{architecture}"]}, (wheel,)))


def test_a_lock_of_two_platforms_keeps_each_architecture_with_its_wheel_hashes():
    amd, arm = _lock("amd64", "1"), _lock("arm64", "2")
    both = platform_lock({"amd64": amd, "arm64": arm}, ("amd64", "arm64"))
    text = dumps(both)
    data = json.loads(text)
    assert data["format"] == 3 and set(data["platforms"]) == {"arm64"}
    assert data["debian"]["inputs"]["architecture"] == "amd64"
    assert data["platforms"]["arm64"]["python"]["packages"]["markupsafe"]["sha256"] == "2" * 8
    read = parse_lock(text, "imagebuild.lock")
    assert read.for_architecture("amd64") == amd and read.for_architecture("arm64") == arm
    assert read.for_architecture("riscv64") is None


def test_a_lock_of_one_platform_is_written_as_before():
    amd = _lock("amd64", "1")
    assert json.loads(dumps(amd))["format"] == 2 and "platforms" not in json.loads(dumps(amd))
    assert amd.for_architecture("amd64") is amd


# -- the index ----------------------------------------------------------------------------


def _image(architecture: str) -> Descriptor:
    return Image(created="1970-01-01T00:00:00Z", platform=Platform("linux", architecture)).manifest_descriptor()


def test_the_index_names_each_platform_and_is_the_same_bytes_each_time():
    children = [_image("amd64"), _image("arm64")]
    raw = image_index(children, {"org.opencontainers.image.version": "abc1234"})
    assert raw == image_index([_image("amd64"), _image("arm64")], {"org.opencontainers.image.version": "abc1234"})
    data = json.loads(raw)
    assert data["mediaType"] == mt.OCI_INDEX and data["annotations"]["org.opencontainers.image.version"] == "abc1234"
    assert [entry["platform"] for entry in data["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux"}]
    parsed = parse_index(raw)
    assert platform_child(parsed, Platform("linux", "arm64")).digest == children[1].digest
    assert platform_child(parsed, Platform("linux", "s390x")) is None


def test_an_index_child_without_a_platform_is_refused():
    with pytest.raises(ValueError):
        image_index([Descriptor(mt.OCI_MANIFEST, Digest.of(b"x"), 1)])


def test_the_store_gives_the_host_platform_image_of_an_index(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    images = [Image(created="1970-01-01T00:00:00Z", platform=Platform("linux", arch)) for arch in ("amd64", "arm64")]
    children = [store.write_image(image) for image in images]
    index = store.put_manifest(image_index(children), mt.OCI_INDEX, ["hello:1"])
    host = host_platform().architecture
    expected = {"amd64": children[0], "arm64": children[1]}[host]
    assert store.image_for(index.digest) == expected.digest
    assert store.image_for(index.digest, Platform("linux", "arm64")) == children[1].digest
    assert store.image_for(children[0].digest) == children[0].digest     # an image is itself
    with pytest.raises(UserError, match="has no image for linux/s390x"):
        store.image_for(index.digest, Platform("linux", "s390x"))


def test_images_lists_the_platforms_of_an_index(tmp_path):
    from conftest import imagebuild

    store = LayoutStore(tmp_path / "store").ensure()
    children = [store.write_image(Image(created="1970-01-01T00:00:00Z", platform=Platform("linux", arch)))
                for arch in ("amd64", "arm64")]
    index = store.put_manifest(image_index(children), mt.OCI_INDEX, ["hello:1"])
    done = imagebuild("images", "--store", store.root)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"hello:1\t{index.digest}\tlinux/amd64,linux/arm64\n"
    done = imagebuild("images", "--store", store.root, "--json")
    row = json.loads(done.stdout)["images"][0]
    assert row["kind"] == "index" and row["platforms"] == ["linux/amd64", "linux/arm64"]


def test_a_platform_is_os_slash_arch():
    from imagebuild.oci.model import parse_platform

    assert parse_platform("linux/arm64") == Platform("linux", "arm64")
    assert parse_platform("linux/arm/v7") == Platform("linux", "arm", "v7")
    for bad in ("arm64", "linux/", "linux/arm64/v8/x", "linux/../x"):
        with pytest.raises(UserError, match="is not a platform"):
            parse_platform(bad)


def test_pull_refuses_a_bad_platform_in_one_line(tmp_path):
    from conftest import imagebuild

    done = imagebuild("pull", "127.0.0.1:9/x:1", "--platform", "arm64", "--store", tmp_path / "s")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: 'arm64' is not a platform (write OS/ARCH, e.g. linux/arm64)"], done.stderr


def test_a_disk_of_a_multi_platform_recipe_is_refused_in_one_line(tmp_path):
    from imagebuild.build.disk.from_recipe import refuse_unbootable

    with pytest.raises(UserError, match="a disk holds one image; the recipe lists the platforms "
                                        "linux/amd64, linux/arm64"):
        refuse_unbootable(load(tmp_path, "platforms: [linux/amd64, linux/arm64]\n"))
    refuse_unbootable(load(tmp_path, "platforms: [linux/amd64]\n"))


# -- lock --check and bake's refusal, per platform (no mirror, no index: the inputs only) -------------


def _two_platform_app(tmp_path):
    import shutil

    from tests.bake_support import EXAMPLES

    app = tmp_path / "flask-hello"
    shutil.copytree(EXAMPLES / "flask-hello", app, ignore=shutil.ignore_patterns("__pycache__"))
    recipe = app / "imagebuild.yaml"
    recipe.write_text(recipe.read_text() + "platforms: [linux/amd64, linux/arm64]\n")
    return app


def _with_arm64_part(app):
    """The example's lock plus an arm64 part whose inputs fit (its versions are not resolved here)."""
    from imagebuild.build.layers.debian import lock_inputs
    from imagebuild.build.layers.libraries import python_lock_inputs
    from imagebuild.sources.lockfile import LOCK_NAME, read_lock, write_lock

    recipe = load_recipe(app, context=NO_GIT).for_architecture("arm64")
    amd64 = read_lock(app / LOCK_NAME)
    # amd64's dpkg records stand in for arm64's, so that the lock is complete (not resolved here either)
    records = {name: {**entry, "architecture": "arm64" if entry.get("architecture") == "amd64"
                      else entry.get("architecture", "")} for name, entry in amd64.packages.items()}
    arm64 = DebianLock(inputs=lock_inputs(recipe.os, recipe.runtime), source_date_epoch=amd64.source_date_epoch,
                       os=amd64.os, runtime=amd64.runtime, packages=records, os_release=amd64.os_release,
                       python=PythonLock(python_lock_inputs(recipe, (app / "requirements.txt").read_bytes()),
                                         amd64.python.packages))
    write_lock(app / LOCK_NAME, platform_lock({"amd64": amd64, "arm64": arm64}, ("amd64", "arm64")))


def test_lock_check_names_a_platform_the_lock_lacks_and_passes_once_each_has_its_part(tmp_path):
    from conftest import imagebuild

    app = _two_platform_app(tmp_path)
    done = imagebuild("lock", "--check", app)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "out of date with the Debian inputs (os/runtime sections) and the Python requirements" in done.stderr
    _with_arm64_part(app)
    done = imagebuild("lock", "--check", app)
    assert done.returncode == 0, done.stderr


def test_bake_refuses_a_committed_lock_without_every_platform(tmp_path):
    from imagebuild.build.bake import read_input
    from tests.bake_support import commit_all, git

    app = _two_platform_app(tmp_path)
    git(app, "init", "-q", "-b", "main")
    commit_all(app, "first", 1_750_000_000)
    with pytest.raises(UserError, match="imagebuild.lock is out of date with imagebuild.yaml's os/runtime sections"):
        read_input(app)
    _with_arm64_part(app)
    commit_all(app, "both platforms locked", 1_750_000_100)
    source = read_input(app)
    arm = source.for_architecture("arm64")
    assert arm.recipe.os.architecture == "arm64" and arm.lock.architecture == "arm64"
    assert arm.architectures == ("amd64", "arm64") and source.for_architecture("amd64").lock.python is not None


def test_a_lock_resolved_for_one_platform_is_written_beside_the_others(tmp_path):
    """bake --allow-dirty resolves a platform's part alone: the file keeps every other part."""
    from imagebuild.build.bake import BakeInput, _write_own_lock
    from imagebuild.sources.lockfile import read_lock, write_lock

    recipe = load(tmp_path, "platforms: [linux/amd64, linux/arm64]\n")
    path = tmp_path / "imagebuild.lock"
    write_lock(path, _lock("amd64", "1"))
    source = BakeInput(recipe, None, None, None, update_lock=True)
    _write_own_lock(source.for_architecture("arm64"), path, _lock("arm64", "2"))
    both = read_lock(path)
    assert both.for_architecture("amd64") == _lock("amd64", "1") and both.for_architecture("arm64") == _lock("arm64", "2")
    _write_own_lock(source.for_architecture("amd64"), path, _lock("amd64", "3"))
    both = read_lock(path)
    assert both.for_architecture("amd64") == _lock("amd64", "3") and both.for_architecture("arm64") == _lock("arm64", "2")


def test_a_foreign_architecture_without_qemu_binfmt_is_refused_in_one_line(tmp_path):
    from imagebuild.sources.debian_rootfs import require_emulation

    with pytest.raises(UserError) as caught:
        require_emulation("arm64", machine="x86_64", binfmt_dir=tmp_path)
    assert caught.value.one_line() == (
        f"building arm64 packages on this x86_64 machine needs qemu-user registered with binfmt_misc "
        f"({tmp_path}/qemu-aarch64 is missing or disabled) (apt-get install qemu-user-static binfmt-support && "
        f"update-binfmts --enable qemu-aarch64)")
    (tmp_path / "qemu-aarch64").write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    with pytest.raises(UserError):
        require_emulation("arm64", machine="x86_64", binfmt_dir=tmp_path)
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    require_emulation("arm64", machine="x86_64", binfmt_dir=tmp_path)
    require_emulation("amd64", machine="x86_64", binfmt_dir=tmp_path / "none")    # native: nothing to check
