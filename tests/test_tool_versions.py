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
