"""The store option pointing somewhere odd: a file, a directory that is no store,
a read-only mount. Reading works where it can; mistakes are one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from tests.conftest import REGISTRY, imagebuild
from tests.test_export_errors import all_files, assert_one_line_error, read_only_view, without_root_powers


def make_store(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hello.txt").write_text("hello\n")
    store = tmp_path / "store"
    made = imagebuild("image", "from-dir", tree, "hello:v1", "--store", store, "--json")
    assert made.returncode == 0, made.stderr
    return store, tree, json.loads(made.stdout)["digest"]


@pytest.mark.integration
def test_push_from_a_read_only_store_succeeds(tmp_path):
    store, _, digest = make_store(tmp_path)
    target = f"{REGISTRY}/ro-{uuid.uuid4().hex[:10]}/hello:v1"
    with read_only_view(store, tmp_path / "ro") as ro:
        before = all_files(ro)
        pushed = imagebuild("push", "hello:v1", "--to", target, "--store", ro, "--json")
        assert pushed.returncode == 0, pushed.stderr
        assert json.loads(pushed.stdout)["digest"] == digest
        assert all_files(ro) == before
    pulled = imagebuild("pull", target, "--store", tmp_path / "other", "--json")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["digest"] == digest


def test_a_file_as_the_store_is_a_user_error(tmp_path):
    _, tree, _ = make_store(tmp_path)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert_one_line_error(imagebuild("image", "from-dir", tree, "hello:v2", "--store", not_a_dir),
                          f"cannot use {not_a_dir} as the store", "--store")
    assert_one_line_error(imagebuild("images", "--store", not_a_dir), "is not an imagebuild store")
    assert not_a_dir.read_text() == "x"


def test_images_in_a_directory_that_is_no_store(tmp_path):
    _, tree, _ = make_store(tmp_path)
    assert_one_line_error(imagebuild("images", "--store", tree), f"{tree} is not an imagebuild store")
    empty = tmp_path / "empty"
    empty.mkdir()
    listed = imagebuild("images", "--store", empty, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["images"] == []


def test_an_empty_listing_says_so_on_stderr_only(tmp_path):
    listed = imagebuild("images", "--store", tmp_path / "none")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "" and listed.stderr == f"no images in {tmp_path / 'none'}\n"


@pytest.mark.parametrize("garbled, words", [
    ("{bad", "is unreadable"),
    ('{"manifests": 3}', "is not an OCI image index"),
    ("[]", "is not an OCI image index"),
    ('{"manifests": [{"digest": "sha256:00"}]}', "holds a garbled descriptor"),
])
def test_a_garbled_store_index_is_one_line_with_exit_code_4(tmp_path, garbled, words):
    store, _, _ = make_store(tmp_path)
    (store / "index.json").write_text(garbled)
    for args in (["images"], ["export", "hello:v1", f"oci:{tmp_path / 'out'}"]):
        assert_one_line_error(imagebuild(*args, "--store", store), f"the store's index {store / 'index.json'}",
                              words, "restore it or remove the store", code=4)
    assert (store / "index.json").read_text() == garbled
    assert not (tmp_path / "out").exists()


def run_without_root_powers(*args):
    done = subprocess.run(without_root_powers(sys.executable, "-m", "imagebuild", *map(str, args)),
                          capture_output=True, text=True)
    return done


def test_a_store_without_permissions_names_what_it_cannot_reach(tmp_path):
    store, tree, digest = make_store(tmp_path)
    blob = store / "blobs" / "sha256" / digest.split(":", 1)[1]
    blob.chmod(0)
    try:
        done = run_without_root_powers("export", "hello:v1", f"oci:{tmp_path / 'out'}", "--store", store)
    finally:
        blob.chmod(0o644)
    assert_one_line_error(done, f"no access to {blob} in the store at {store}: Permission denied",
                          "a directory you can read and write")
    assert not (tmp_path / "out").exists()

    (store / "index.json").chmod(0)
    try:
        done = run_without_root_powers("images", "--store", store)
    finally:
        (store / "index.json").chmod(0o644)
    assert_one_line_error(done, f"no access to {store / 'index.json'} in the store at {store}")

    store.chmod(0o555)
    try:
        done = run_without_root_powers("image", "from-dir", tree, "hello:v2", "--store", store)
    finally:
        store.chmod(0o755)
    # The temp file was never made: the directory is named, not the temp file's name.
    assert_one_line_error(done, f"no access to {store} in the store at {store}: Permission denied")
    assert "hello:v2" not in (store / "index.json").read_text()
