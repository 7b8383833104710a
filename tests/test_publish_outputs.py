"""The bake command's outputs: parsed from its options in publishing order, each refusing what it
can before anything is built. Pure: nothing here connects to an engine or a registry."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from imagebuild.errors import RecipeError, UserError
from imagebuild.publish.disk import DiskOutput
from imagebuild.publish.docker_archive import DockerArchiveOutput
from imagebuild.publish.engine import EngineOutput
from imagebuild.publish.oci_dir import OciDirOutput
from imagebuild.publish.output import Destination, parse_outputs
from imagebuild.publish.registry import RegistryOutput, pushed_name, registry_target
from imagebuild.recipe.model import OsSpec, Recipe


def test_outputs_come_in_publishing_order(tmp_path):
    outputs = parse_outputs([f"disk:{tmp_path}/a.qcow2", f"oci:{tmp_path}/layout", f"docker-archive:{tmp_path}/a.tar"],
                            load=True, push=True, form="disk")
    assert [type(item) for item in outputs] == [Destination, Destination, EngineOutput, RegistryOutput, DiskOutput]
    for item in outputs[:2]:
        item.check(None)
    assert [type(item.output) for item in outputs[:2]] == [OciDirOutput, DockerArchiveOutput]
    assert outputs[-1].targets == [tmp_path / "a.qcow2"] and outputs[-1].push


def test_no_outputs_but_the_store():
    assert parse_outputs([]) == []


@pytest.mark.parametrize("destinations,form,words", [
    ([], "floppy", "neither image nor disk"),
    (["disk:{tmp}/a.qcow2"], "image", "needs --format disk"),
    (["disk:{tmp}/a.vmdk"], "disk", "neither .qcow2 nor .raw"),
    (["disk:{tmp}/missing/a.qcow2"], "disk", "is not a directory"),
])
def test_bad_options_are_refused_when_parsed(tmp_path, destinations, form, words):
    with pytest.raises(UserError, match=words):
        parse_outputs([item.format(tmp=tmp_path) for item in destinations], form=form)


def test_a_disk_is_refused_for_an_arm64_recipe_when_checked():
    amd64 = Recipe(name="app")
    DiskOutput().check(SimpleNamespace(recipe=amd64))
    with pytest.raises(UserError, match="x86-64 machines only.*arm64"):
        DiskOutput().check(SimpleNamespace(recipe=replace(amd64, os=OsSpec(architecture="arm64"))))


def test_push_goes_under_the_recipe_registry():
    target = registry_target(Recipe(name="app", registry="localhost:5000/acme"), "app:abc1234")
    assert pushed_name(target) == "localhost:5000/acme/app:abc1234"
    with pytest.raises(RecipeError, match="--push needs a registry"):
        registry_target(Recipe(name="app"), "app:abc1234")


def test_an_unknown_destination_is_refused_in_its_turn_among_the_checks(tmp_path):
    """As each path is: after the recipe is read, and after the destinations listed before it."""
    outputs = parse_outputs([f"oci:{tmp_path}/missing/layout", "zip:x.zip"])
    with pytest.raises(UserError, match="does not exist"):
        outputs[0].check(None)
    with pytest.raises(UserError, match="unknown destination"):
        outputs[1].check(None)
