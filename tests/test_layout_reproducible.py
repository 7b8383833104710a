"""Same inputs, two stores, same manifest digest and same exported bytes."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import imagebuild
from tests.oci_support import APPLETS, HELLO_ENTRYPOINT, static_busybox

SDE = 1_700_000_000


def make_tree(root, *, order, uid, mtime):
    """The same files, created in a different order, owned and stamped differently."""
    files = {"bin/busybox": static_busybox().read_bytes(), "etc/motd": b"welcome\n",
             "app/data/a.txt": b"a" * 1000, "app/data/b.txt": b"b" * 2000}
    for rel in (order if order else sorted(files)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[rel])
    os.chmod(root / "bin" / "busybox", 0o755)
    for applet in (APPLETS if order else reversed(APPLETS)):
        (root / "bin" / applet).symlink_to("busybox")
    os.link(root / "app/data/a.txt", root / "app/data/a-again.txt")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)
            os.utime(os.path.join(dirpath, name), (mtime, mtime), follow_symlinks=False)
    return root


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_two_stores_give_the_same_digest_and_bytes(tmp_path, compression):
    one = make_tree(tmp_path / "one", order=["etc/motd", "bin/busybox", "app/data/b.txt", "app/data/a.txt"],
                    uid=0, mtime=SDE + 3600)
    two = make_tree(tmp_path / "two", order=None, uid=1001, mtime=SDE + 7 * 86400 + 0.5)
    results = []
    for tree, store in ((one, tmp_path / "store-one"), (two, tmp_path / "store-two")):
        made = imagebuild("image", "from-dir", tree, "repro:v1", "--entrypoint", json.dumps(HELLO_ENTRYPOINT),
                          "--compression", compression, "--store", store, "--json",
                          env={"SOURCE_DATE_EPOCH": str(SDE)})
        assert made.returncode == 0, made.stderr
        archive = tmp_path / f"{store.name}.tar"
        exported = imagebuild("export", "repro:v1", f"docker-archive:{archive}", "--store", store)
        assert exported.returncode == 0, exported.stderr
        results.append((json.loads(made.stdout)["digest"], archive.read_bytes(),
                        sorted(p.name for p in (store / "blobs" / "sha256").iterdir())))
    assert results[0][0] == results[1][0]
    assert results[0][1] == results[1][1]
    assert results[0][2] == results[1][2]


def test_a_different_epoch_or_content_changes_the_digest(tmp_path):
    tree = make_tree(tmp_path / "tree", order=None, uid=0, mtime=SDE + 10)
    digests = set()
    for epoch in (SDE, SDE - 1):
        made = imagebuild("image", "from-dir", tree, "x:1", "--store", tmp_path / "s", "--json",
                          env={"SOURCE_DATE_EPOCH": str(epoch)})
        assert made.returncode == 0, made.stderr
        digests.add(json.loads(made.stdout)["digest"])
    (tree / "etc" / "motd").write_bytes(b"changed\n")
    os.utime(tree / "etc" / "motd", (SDE + 10, SDE + 10))
    made = imagebuild("image", "from-dir", tree, "x:1", "--store", tmp_path / "s", "--json",
                      env={"SOURCE_DATE_EPOCH": str(SDE)})
    digests.add(json.loads(made.stdout)["digest"])
    assert len(digests) == 3
    shutil.rmtree(tree)
