"""Bad input to bake: one line on stderr, exit code 2, and the store exactly as it was."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest

from tests.bake_support import EXAMPLES, FIRST_COMMIT_TIME, bake, bake_json, commit_all, example_repo, git, seed
from tests.conftest import imagebuild
from tests.debian_fixtures import debian_python_base  # noqa: F401
from tests.test_export_errors import assert_one_line_error

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def baked_store(tmp_path_factory, debian_python_base):  # noqa: F811
    """A store that already holds one baked image, so 'intact' means something."""
    root = tmp_path_factory.mktemp("errors")
    store = seed(root / "store", debian_python_base)
    bake_json(example_repo(root, "flask-hello", lock=debian_python_base.lock_path), store.root)
    return store


@pytest.fixture
def repo(tmp_path, debian_python_base):  # noqa: F811
    return example_repo(tmp_path, "flask-hello", lock=debian_python_base.lock_path)


def snapshot(store) -> tuple[bytes, list[str]]:
    return (store.root / "index.json").read_bytes(), sorted(p.name for p in (store.root / "blobs/sha256").iterdir())


def assert_refused(done, store, before, *words: str, code: int = 2) -> None:
    assert_one_line_error(done, *words, code=code)
    assert snapshot(store) == before


def edit_recipe(repo, old: str, new: str) -> None:
    recipe = repo / "imagebuild.yaml"
    text = recipe.read_text()
    assert old in text
    recipe.write_text(text.replace(old, new, 1))
    commit_all(repo, "edit", FIRST_COMMIT_TIME + 60)


def test_a_recipe_typo_names_file_line_and_key(repo, baked_store):
    before = snapshot(baked_store)
    edit_recipe(repo, "server:\n", "sever:\n")
    assert_refused(bake(repo, baked_store.root), baked_store, before, "imagebuild.yaml:", "sever")


def test_a_missing_requirements_file(repo, baked_store):
    before = snapshot(baked_store)
    edit_recipe(repo, "requirements: requirements.txt", "requirements: requirements-prod.txt")
    assert_refused(bake(repo, baked_store.root), baked_store, before, "requirements-prod.txt")


def test_a_requirements_file_that_is_not_committed(repo, baked_store):
    before = snapshot(baked_store)
    shutil.copyfile(repo / "requirements.txt", repo / "requirements-new.txt")
    edit_recipe(repo, "requirements: requirements.txt", "requirements: requirements-new.txt")
    (repo / "requirements-new.txt").unlink()
    commit_all(repo, "recipe only", FIRST_COMMIT_TIME + 120)
    shutil.copyfile(repo / "requirements.txt", repo / "requirements-new.txt")  # present, but untracked
    assert_refused(bake(repo, baked_store.root), baked_store, before, "requirements-new.txt", "not in the commit")


# A changed os/runtime section outgrows the committed lock; only --allow-dirty resolves a new one,
# and that resolution is where unknown packages and runtimes are found.
def test_an_unknown_debian_package(repo, baked_store):
    before = snapshot(baked_store)
    edit_recipe(repo, "packages: [ca-certificates]", "packages: [ca-certificates, no-such-package-imagebuild]")
    assert_refused(bake(repo, baked_store.root, "--allow-dirty"), baked_store, before, "no-such-package-imagebuild")
    assert (repo / "imagebuild.lock").read_bytes() == git_show(repo, "imagebuild.lock")


def test_an_unsupported_runtime_version(repo, baked_store):
    before = snapshot(baked_store)
    edit_recipe(repo, "extends: python-wsgi\n", "extends: python-wsgi\nruntime:\n  python: \"3.99\"\n")
    assert_refused(bake(repo, baked_store.root, "--allow-dirty"), baked_store, before, "3.99")


def git_show(repo, path: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, check=True).stdout


def test_a_lock_the_recipe_has_outgrown_is_refused_not_rewritten(repo, baked_store):
    before = snapshot(baked_store)
    edit_recipe(repo, "packages: [ca-certificates]", "packages: [ca-certificates, tzdata]")
    assert_refused(bake(repo, baked_store.root), baked_store, before,
                   "imagebuild.lock is out of date with imagebuild.yaml's os/runtime", "imagebuild lock",
                   "--allow-dirty")
    assert (repo / "imagebuild.lock").read_bytes() == git_show(repo, "imagebuild.lock")


def test_a_missing_lock(repo, baked_store):
    before = snapshot(baked_store)
    git(repo, "rm", "-q", "imagebuild.lock")
    commit_all(repo, "no lock", FIRST_COMMIT_TIME + 60)
    assert_refused(bake(repo, baked_store.root), baked_store, before, "imagebuild.lock is missing",
                   "imagebuild lock", "--allow-dirty")
    assert not (repo / "imagebuild.lock").exists()


def test_a_lock_that_is_not_committed(repo, baked_store):
    before = snapshot(baked_store)
    git(repo, "rm", "-q", "--cached", "imagebuild.lock")
    git(repo, "commit", "-q", "-m", "lock untracked", when=FIRST_COMMIT_TIME + 60)
    assert (repo / "imagebuild.lock").exists()
    assert_refused(bake(repo, baked_store.root), baked_store, before, "imagebuild.lock is not committed",
                   "--allow-dirty")


def test_a_lock_with_uncommitted_changes(repo, baked_store):
    before = snapshot(baked_store)
    lock = repo / "imagebuild.lock"
    lock.write_text(lock.read_text() + "\n")
    assert_refused(bake(repo, baked_store.root), baked_store, before, "imagebuild.lock has uncommitted changes",
                   "--allow-dirty")


def test_allow_dirty_takes_a_lock_from_outside_the_commit_and_marks_the_image_dirty(repo, baked_store):
    """The quick first try: the image is baked but can never pass for the commit's own."""
    git(repo, "rm", "-q", "--cached", "imagebuild.lock")
    git(repo, "commit", "-q", "-m", "lock untracked", when=FIRST_COMMIT_TIME + 60)
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    result = bake_json(repo, baked_store.root, "--allow-dirty")
    assert result["version"].endswith("-dirty")
    manifest = baked_store.read_manifest(result["digest"])
    assert manifest.annotations["dev.imagebuild.dirty"] == "true"


def test_lock_refuses_a_base_image_recipe_before_resolving_anything(repo):
    edit_recipe(repo, "os:\n  packages: [ca-certificates]\n", "os:\n  image: base@sha256:" + "ab" * 32 + "\n")
    done = imagebuild("lock", repo)
    line = assert_one_line_error(done, "os.image", "imagebuild.yaml")
    assert "None" not in line and "resolving" not in done.stderr


def test_an_output_directory_whose_parent_does_not_exist(repo, baked_store, tmp_path):
    before = snapshot(baked_store)
    missing = tmp_path / "no-such-dir" / "layout"
    assert_refused(bake(repo, baked_store.root, "--output", f"oci:{missing}"), baked_store, before,
                   str(missing.parent), "does not exist")
    assert not missing.parent.exists()


def test_a_store_path_that_is_a_file(repo, tmp_path):
    store = tmp_path / "store-file"
    store.write_text("not a store\n")
    line = assert_one_line_error(bake(repo, store), str(store))
    assert "NotADirectoryError" not in line and "unexpected" not in line
    assert store.read_text() == "not a store\n"


def test_not_a_git_repository(tmp_path, baked_store):
    before = snapshot(baked_store)
    plain = tmp_path / "plain"
    shutil.copytree(EXAMPLES / "flask-hello", plain)
    assert_refused(bake(plain, baked_store.root), baked_store, before, "not a git repository")


def test_a_dirty_tree(repo, baked_store):
    before = snapshot(baked_store)
    (repo / "requirements.txt").write_text("flask==3.1.3\n")
    assert_refused(bake(repo, baked_store.root), baked_store, before, "requirements.txt", "--allow-dirty")


def test_an_unreachable_registry_for_push(repo, baked_store):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = snapshot(baked_store)
    edit_recipe(repo, "name: flask-hello\n", f"name: flask-hello\nregistry: 127.0.0.1:{port}/acme\n")
    assert_refused(bake(repo, baked_store.root, "--push"), baked_store, before, f"127.0.0.1:{port}", code=8)


def test_push_without_a_registry_in_the_recipe(repo, baked_store):
    before = snapshot(baked_store)
    assert_refused(bake(repo, baked_store.root, "--push"), baked_store, before, "registry")


def test_an_unknown_output_kind(repo, baked_store):
    before = snapshot(baked_store)
    assert_refused(bake(repo, baked_store.root, "--output", "zip:/tmp/x.zip"), baked_store, before, "zip:")


def test_a_recipe_path_that_does_not_exist(tmp_path, baked_store):
    before = snapshot(baked_store)
    assert_refused(bake(tmp_path / "nowhere", baked_store.root), baked_store, before, "nowhere")


def test_load_without_a_docker_engine(repo, baked_store, tmp_path):
    before = snapshot(baked_store)
    done = bake(repo, baked_store.root, "--load", env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert_refused(done, baked_store, before, "no Docker engine")


def test_a_recipe_that_is_not_committed(repo, baked_store):
    before = snapshot(baked_store)
    git(repo, "rm", "-q", "--cached", "imagebuild.yaml")
    git(repo, "commit", "-q", "-m", "recipe no longer tracked")
    assert_refused(bake(repo, baked_store.root), baked_store, before, "imagebuild.yaml", "not committed")


def test_a_base_image_that_is_not_in_the_store(repo, baked_store):
    before = snapshot(baked_store)
    edit_recipe(repo, "os:\n  packages: [ca-certificates]\n", "os:\n  image: base@sha256:" + "ab" * 32 + "\n")
    assert_refused(bake(repo, baked_store.root), baked_store, before, "not in the local store")


@pytest.mark.parametrize("name", ["prod", "promotion-prod-000001-5f1c0a9e2b7d", "v1-disk"])
def test_a_version_named_like_a_tag_only_promotion_writes(repo, baked_store, name):
    """`git tag prod` then a bake would overwrite the prod environment's tag (in the local store, where
    promotion keeps it without a registry, and in the registry on `--push`): refused before building."""
    before = snapshot(baked_store)
    git(repo, "tag", name)
    done = bake(repo, baked_store.root)
    assert_refused(done, baked_store, before, f"version {name!r} cannot be an image tag", "rename the git tag")


def test_a_base_image_with_a_damaged_layer_is_not_baked_in(repo, baked_store):
    """The base's layer in the store no longer matches its digest: bake refuses it (exit 4), bakes nothing."""
    from imagebuild.build.cache import store_layer
    from imagebuild.oci.layer import Entry
    from imagebuild.oci.model import Image

    layer = store_layer(baked_store, [Entry.file("etc/base-marker", b"damaged base\n")], FIRST_COMMIT_TIME)
    base = Image(created="2025-01-01T00:00:00Z").with_layer(layer.as_layer(), created_by="test")
    digest = baked_store.write_image(base, ["damaged-base:1"]).digest
    path = baked_store.blob_path(layer.digest)
    try:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.chmod(0o644)
        path.write_bytes(bytes(data))
        before = snapshot(baked_store)
        edit_recipe(repo, "os:\n  packages: [ca-certificates]\n", f"os:\n  image: damaged-base@{digest}\n")
        assert_refused(bake(repo, baked_store.root), baked_store, before, "damaged-base@", layer.digest, "corrupt",
                       code=4)
    finally:
        baked_store.untag("damaged-base:1")
        path.unlink()


def test_a_disk_of_an_arm64_recipe_is_refused_before_the_image_is_baked(repo, baked_store, tmp_path):
    before = snapshot(baked_store)
    # The base is not in the store either: the bake would stop there, after the disk's refusal is due.
    edit_recipe(repo, "os:\n  packages: [ca-certificates]\n",
                "os:\n  image: base@sha256:" + "ab" * 32 + "\n  architecture: arm64\n")
    done = bake(repo, baked_store.root, "--format", "disk", "-o", f"disk:{tmp_path}/x.qcow2")
    assert_refused(done, baked_store, before, "x86-64", "arm64")
    assert not (tmp_path / "x.qcow2").exists()


def test_requirements_changed_since_the_lock_are_refused_with_the_fix(repo, baked_store):
    before = snapshot(baked_store)
    with (repo / "requirements.txt").open("a") as handle:
        handle.write("# not yet locked\n")
    commit_all(repo, "requirements change", FIRST_COMMIT_TIME + 60)
    assert_refused(bake(repo, baked_store.root), baked_store, before, "requirements changed", "`imagebuild lock`")


def test_a_lock_without_the_python_closure_is_refused_with_the_fix(repo, baked_store):
    before = snapshot(baked_store)
    lock = json.loads((repo / "imagebuild.lock").read_text())
    del lock["python"]
    lock["format"] = 1
    (repo / "imagebuild.lock").write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    commit_all(repo, "old lock", FIRST_COMMIT_TIME + 60)
    assert_refused(bake(repo, baked_store.root), baked_store, before, "no Python closure", "`imagebuild lock`")


def test_a_tampered_hash_in_the_lock_fails_the_install(repo, tmp_path, debian_python_base):  # noqa: F811
    """Bake installs with --require-hashes: a wheel that is not the locked one is refused by pip."""
    lock = json.loads((repo / "imagebuild.lock").read_text())
    lock["python"]["packages"]["flask"]["sha256"] = "0" * 64
    (repo / "imagebuild.lock").write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    commit_all(repo, "tampered", FIRST_COMMIT_TIME + 60)
    store = seed(tmp_path / "store", debian_python_base)
    done = bake(repo, store.root)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "does not match its pinned sha256" in errors[0] and "flask" in errors[0], errors[0]


def test_allow_dirty_resolves_a_closure_the_uncommitted_lock_lacks_and_writes_it(repo, baked_store):
    """The quick first try keeps working for libraries: pip resolves the closure and the lock gets it."""
    from imagebuild.sources.lockfile import read_lock

    git(repo, "rm", "-q", "--cached", "imagebuild.lock")
    git(repo, "commit", "-q", "-m", "lock untracked", when=FIRST_COMMIT_TIME + 60)
    lock = json.loads((repo / "imagebuild.lock").read_text())
    del lock["python"]
    lock["format"] = 1
    (repo / "imagebuild.lock").write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    result = bake_json(repo, baked_store.root, "--allow-dirty")
    assert result["version"].endswith("-dirty")
    written = read_lock(repo / "imagebuild.lock")
    assert written.python is not None
    assert {"flask", "markupsafe"} <= {package.name for package in written.python.packages}
    assert written.os == lock["debian"]["os"]
