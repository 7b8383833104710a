"""`@frozen` behaves as `@dataclass(frozen=True)` does: the same class, built either way, compared."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Mapping

import pytest

from imagebuild.frozen import frozen, mutable


def _pair(ours=frozen, theirs=dataclass(frozen=True)):
    """The same class body under each decorator."""
    made = []
    for decorate in (theirs, ours):
        @decorate
        class Value:
            name: str
            port: int = 8000
            options: Mapping[str, str] = field(default_factory=dict)
            hidden: str = field(default="x", repr=False, compare=False)
            seen: list = field(default_factory=list, init=False)

            @property
            def label(self) -> str:
                return f"{self.name}:{self.port}"
        made.append(Value)
    return made


def _outcome(call):
    try:
        return ("ok", call())
    except Exception as exc:  # noqa: BLE001 - the point is to compare what each one raises
        return (type(exc).__name__, str(exc).replace("_pair.<locals>.", ""))


CALLS = [
    lambda cls: repr(cls("web")),
    lambda cls: repr(cls("web", 80, {"a": "b"}, "y")),
    lambda cls: repr(cls(name="web", port=1)),
    lambda cls: cls("web") == cls("web", 8000),
    lambda cls: cls("web", hidden="a") == cls("web", hidden="b"),
    lambda cls: cls("web") == cls("db"),
    lambda cls: cls("web").__eq__("web"),
    lambda cls: hash(cls("web")) == hash(cls("web")),
    lambda cls: hash(cls("web", options=None)) == hash(cls("web", options=None, hidden="z")),
    lambda cls: cls("web").options is not cls("web").options,
    lambda cls: cls("web").label,
    lambda cls: repr(dataclasses.replace(cls("web"), port=9)),
    lambda cls: dataclasses.asdict(cls("web")),
    lambda cls: [f.name for f in dataclasses.fields(cls)],
    lambda cls: cls.__match_args__,
    lambda cls: cls.__doc__.replace("_pair.<locals>.", ""),
    lambda cls: repr(copy.deepcopy(cls("web"))),
    lambda cls: cls(),
    lambda cls: cls("a", 1, {}, "h", "extra"),
    lambda cls: cls("a", name="b"),
    lambda cls: cls("a", colour="red"),
    lambda cls: setattr(cls("web"), "port", 1),
    lambda cls: setattr(cls("web"), "other", 1),
    lambda cls: delattr(cls("web"), "port"),
]


@pytest.mark.parametrize("index", range(len(CALLS)))
def test_frozen_matches_dataclass(index):
    reference, ours = _pair()
    assert _outcome(lambda: CALLS[index](ours)) == _outcome(lambda: CALLS[index](reference))


@pytest.mark.parametrize("index", range(len(CALLS)))
def test_mutable_matches_dataclass(index):
    reference, ours = _pair(mutable, dataclass)
    assert _outcome(lambda: CALLS[index](ours)) == _outcome(lambda: CALLS[index](reference))


def test_a_mutable_field_can_be_set():
    _, ours = _pair(mutable, dataclass)
    value = ours("web")
    value.port = 1
    assert value == ours("web", 1)


def test_post_init_runs_and_may_set_fields():
    @frozen
    class Port:
        number: int

        def __post_init__(self):
            object.__setattr__(self, "number", int(self.number))

    assert Port("80").number == 80
    with pytest.raises(FrozenInstanceError):
        Port(1).number = 2


def test_the_recipe_types_keep_their_dataclass_surface():
    from imagebuild.recipe.model import Environment, Recipe

    recipe = Recipe(name="hello", environments=(Environment("dev"),))
    assert dataclasses.is_dataclass(recipe)
    assert dataclasses.replace(recipe, name="other").environments == recipe.environments
    assert recipe == Recipe(name="hello", environments=(Environment("dev"),))
    assert Environment("dev").config is not Environment("dev").config


def test_missing_arguments_are_named_as_python_names_them():
    for decorate in (dataclass(frozen=True), frozen):
        @decorate
        class Three:
            a: int
            b: int
            c: int
        with pytest.raises(TypeError) as caught:
            Three()
        assert str(caught.value).endswith("missing 3 required positional arguments: 'a', 'b', and 'c'")
        with pytest.raises(TypeError) as caught:
            Three(1, 2, 3, 4)
        assert str(caught.value).endswith("__init__() takes 4 positional arguments but 5 were given")


@pytest.mark.parametrize("ours, theirs", [(frozen, dataclass(frozen=True)), (mutable, dataclass)])
def test_a_class_own_eq_and_init_are_kept_as_dataclass_keeps_them(ours, theirs):
    made = []
    for decorate in (theirs, ours):
        @decorate
        class Named:
            name: str

            def __init__(self, name: str):
                object.__setattr__(self, "name", name.lower())

            def __eq__(self, other):
                return isinstance(other, Named) and self.name == other.name
        made.append(Named)
    for cls in made:
        assert cls("WEB").name == "web"
    # dataclass(frozen=True) still adds __hash__ beside a class's own __eq__; plain dataclass leaves None
    assert [_outcome(lambda cls=cls: hash(cls("a")) == hash(cls("A"))) for cls in made] == \
        [_outcome(lambda: hash(made[0]("a")) == hash(made[0]("A")))] * 2
