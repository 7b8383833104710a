"""A tool's version is asked once per binary, and again when the binary changes."""

from __future__ import annotations

import os

from imagebuild.tool_versions import tool_version


def test_the_version_is_asked_once_per_binary_and_again_after_an_upgrade(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    binary = tmp_path / "tool"
    binary.write_text("#!/bin/sh\necho 1.0\n")
    asked = []

    def probe() -> str:
        asked.append(1)
        return binary.read_text().split()[-1]

    assert tool_version(str(binary), probe) == "1.0"
    assert tool_version(str(binary), probe) == "1.0"
    assert len(asked) == 1
    binary.write_text("#!/bin/sh\necho 2.00\n")       # an upgrade: another size and mtime
    os.utime(binary, ns=(1, 1))
    assert tool_version(str(binary), probe) == "2.00"
    assert len(asked) == 2


def test_an_unreadable_cache_only_costs_the_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "imagebuild").mkdir(parents=True)
    (tmp_path / "cache" / "imagebuild" / "tool-versions.json").write_text("{not json")
    binary = tmp_path / "tool"
    binary.write_text("x")
    assert tool_version(str(binary), lambda: "3") == "3"
    assert tool_version(str(binary), lambda: "other") == "3"


def test_pips_version_is_read_beside_pip_as_importlib_metadata_reads_it():
    """The libraries layer's key holds pip's version: read from the dist-info beside the pip package, the
    same as importlib.metadata's answer, without importing it (a fresh interpreter, so nothing else has)."""
    import importlib.metadata
    import subprocess
    import sys

    code = ("import sys\nfrom imagebuild.build.layers.libraries import _pip_version_beside_pip, pip_version\n"
            "print(_pip_version_beside_pip(), pip_version(), 'importlib.metadata' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    version = importlib.metadata.version("pip")
    assert done.stdout.split() == [version, version, "False"]
