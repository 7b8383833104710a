"""`@frozen` and `@mutable`: what `@dataclass(frozen=True)` and `@dataclass` give a class, without
generating code for it.

dataclasses writes each class's `__init__`, `__repr__`, `__eq__`, `__hash__`, `__setattr__` and
`__delattr__` as source text and compiles it: about half a millisecond per class, paid by every
command at start-up for each value class it imports (the recipe's types and the OCI model alone
are 25). These decorators let dataclasses read the fields (so `fields`, `replace`, `asdict` and
`is_dataclass` work as before) and give the class shared methods that read them instead: the
same arguments, defaults, `__post_init__`, repr and equality; for `@frozen` the hash and
FrozenInstanceError, for `@mutable` settable fields and no hash.
"""

from __future__ import annotations

import reprlib
from dataclasses import MISSING, FrozenInstanceError, dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T", bound=type)


class _Spec:
    """What the shared methods need to know of one class, read once from its fields."""

    def __init__(self, cls: type):
        every = fields(cls)
        # (name, default, factory) of each __init__ parameter, in order
        self.init = tuple((f.name, f.default, f.default_factory) for f in every if f.init)
        self.init_names = frozenset(name for name, _, _ in self.init)
        self.required = tuple(name for name, default, factory in self.init if default is factory is MISSING)
        # as Python words a call with too many arguments: "takes 3" or "takes from 2 to 4" (self counted)
        least, most = len(self.required) + 1, len(self.init) + 1
        self.arity = f"{most}" if least == most else f"from {least} to {most}"
        self.repr = tuple(f.name for f in every if f.repr)
        self.compare = tuple(f.name for f in every if f.compare)
        self.hash = tuple(f.name for f in every if (f.compare if f.hash is None else f.hash))
        # fields left out of __init__ that still get a value there: their default, or a new one
        self.set_after = tuple((f.name, f.default, f.default_factory) for f in every
                               if not f.init and (f.default is not MISSING or f.default_factory is not MISSING))
        self.post_init = hasattr(cls, "__post_init__")


def frozen(cls: T) -> T:
    """The class as `@dataclass(frozen=True)` would make it (no slots, no order, no kw_only)."""
    return _value_class(cls, is_frozen=True)


def mutable(cls: T) -> T:
    """The class as `@dataclass` would make it (no slots, no order, no kw_only)."""
    return _value_class(cls, is_frozen=False)


def _value_class(cls: T, is_frozen: bool) -> T:
    own = dict(cls.__dict__)
    if not own.get("__doc__"):
        cls.__doc__ = "-"      # dataclasses would otherwise ask inspect for a signature (and load tokenize)
    cls = dataclass(init=False, repr=False, eq=False)(cls)
    spec = _Spec(cls)
    cls.__frozen_spec__ = spec
    if not own.get("__doc__"):
        cls.__doc__ = _signature_doc(cls, spec)
    if "__init__" not in own:      # as dataclasses: a class's own __init__ is kept
        cls.__init__ = _init
    if "__repr__" not in own:
        cls.__repr__ = _repr
    if "__eq__" not in own:
        cls.__eq__ = _eq
    # As dataclasses: a class's own __eq__ makes Python set its __hash__ to None, which is not a hash of its own.
    if "__hash__" not in own or (own["__hash__"] is None and "__eq__" in own):
        cls.__hash__ = _hash if is_frozen else None     # as dataclasses: equal by value and mutable, so unhashable
    if is_frozen:
        cls.__setattr__ = _setattr
        cls.__delattr__ = _delattr
    return cls


def _signature_doc(cls: type, spec: _Spec) -> str:
    """The docstring dataclasses gives a class without one: its name and __init__'s parameters."""
    annotations = {f.name: f.type for f in fields(cls)}
    parameters = []
    for name, default, factory in spec.init:
        text = f"{name}: {annotations[name]!r}"
        if default is not MISSING:
            text += f" = {default!r}"
        elif factory is not MISSING:
            text += " = <factory>"
        parameters.append(text)
    return f"{cls.__name__}({', '.join(parameters)})"


def _init(self, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    spec: _Spec = cls.__frozen_spec__
    if len(args) > len(spec.init):
        raise TypeError(f"{cls.__qualname__}.__init__() takes {spec.arity} positional arguments "
                        f"but {len(args) + 1} were given")
    values = dict(zip((name for name, _, _ in spec.init), args))
    for key, value in kwargs.items():
        if key not in spec.init_names:
            raise TypeError(f"{cls.__qualname__}.__init__() got an unexpected keyword argument {key!r}")
        if key in values:
            raise TypeError(f"{cls.__qualname__}.__init__() got multiple values for argument {key!r}")
        values[key] = value
    if len(values) < len(spec.init):
        missing = [name for name in spec.required if name not in values]
        if missing:
            raise TypeError(f"{cls.__qualname__}.__init__() missing {len(missing)} required positional "
                            f"argument{'s' if len(missing) > 1 else ''}: {_names(missing)}")
        for name, default, factory in spec.init:
            if name not in values:
                values[name] = default if default is not MISSING else factory()
    for name, default, factory in spec.set_after:
        values[name] = default if default is not MISSING else factory()
    # Fields are plain instance attributes, as dataclasses' own __init__ makes them.
    self.__dict__.update(values)
    if spec.post_init:
        self.__post_init__()


def _names(names: list[str]) -> str:
    """'a', 'a' and 'b', 'a', 'b', and 'c': as Python lists missing arguments."""
    quoted = [repr(name) for name in names]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


@reprlib.recursive_repr()
def _repr(self) -> str:
    spec: _Spec = type(self).__frozen_spec__
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in spec.repr)
    return f"{type(self).__qualname__}({shown})"


def _eq(self, other: object) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = type(self).__frozen_spec__.compare
    return tuple(getattr(self, name) for name in names) == tuple(getattr(other, name) for name in names)


def _hash(self) -> int:
    return hash(tuple(getattr(self, name) for name in type(self).__frozen_spec__.hash))


def _setattr(self, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")
