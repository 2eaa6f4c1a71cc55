"""Frozen records for config classes: the part of `dataclasses` fleetbeat uses, lighter.

`import dataclasses` costs 1.4 MB of RSS (it imports `inspect`, which imports
`ast`, `dis`, `tokenize`...), about a tenth of the agent's whole budget on a Pi
Zero. Config classes need only frozen records with defaults, default factories
and field metadata, so that much is done here. Type checkers see the real
`dataclasses` (under TYPE_CHECKING), so mypy checks every config class as a
dataclass; `tests/config/test_frozen.py` checks that both behave alike.

Use it exactly like dataclasses:

    @dataclass(frozen=True)
    class UdpConfig:
        port: int = option(9746, integer(min=1, max=65535))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dataclasses import dataclass, field, fields, is_dataclass, replace
else:

    class _Missing:
        def __repr__(self) -> str:
            return "MISSING"

    MISSING = _Missing()

    class FrozenInstanceError(AttributeError):
        """Raised on assignment to a field of a frozen record."""

    class Field:
        __slots__ = ("default", "default_factory", "metadata", "name")

        def __init__(self, default, default_factory, metadata):
            self.name = ""
            self.default = default
            self.default_factory = default_factory
            self.metadata = metadata or {}

        def __repr__(self):
            return f"Field(name={self.name!r})"

    def field(*, default=MISSING, default_factory=MISSING, metadata=None):
        """Declare a field, as `dataclasses.field` does."""
        return Field(default, default_factory, metadata)

    def fields(obj):
        """The fields of a record (or of a real dataclass), in declaration order."""
        return tuple(obj.__dataclass_fields__.values())

    def is_dataclass(obj):
        return hasattr(obj, "__dataclass_fields__")

    def replace(obj, **changes):
        values = {f.name: getattr(obj, f.name) for f in fields(obj)}
        values.update(changes)
        return type(obj)(**values)

    def _frozen_setattr(self, name, value):
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def _init(self, *args, **kwargs):
        flds = self.__dataclass_fields__
        if len(args) > len(flds):
            raise TypeError(f"{type(self).__name__}() takes {len(flds)} arguments")
        for f, value in zip(flds.values(), args):
            if f.name in kwargs:
                raise TypeError(f"{type(self).__name__}() got two values for {f.name!r}")
            kwargs[f.name] = value
        unknown = set(kwargs) - set(flds)
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected {sorted(unknown)}")
        for name, f in flds.items():
            if name in kwargs:
                value = kwargs[name]
            elif f.default is not MISSING:
                value = f.default
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            else:
                raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
            object.__setattr__(self, name, value)
        post = getattr(self, "__post_init__", None)
        if post is not None:
            post()

    def _values(self):
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)

    def _eq(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _values(self) == _values(other)

    def _hash(self):
        return hash(_values(self))

    def _repr(self):
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__dataclass_fields__)
        return f"{type(self).__name__}({inner})"

    def dataclass(cls=None, /, *, frozen=True):
        """A frozen record class: __init__, __eq__, __hash__, __repr__, no assignment."""
        if not frozen:
            raise TypeError("fleetbeat.config.frozen makes frozen records only")

        def wrap(cls):
            flds = {}
            for base in reversed(cls.__mro__[1:]):
                flds.update(getattr(base, "__dataclass_fields__", {}))
            own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 - no typing_extensions here
            for name, annotation in own.items():
                if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                    continue
                value = cls.__dict__.get(name, MISSING)
                f = value if isinstance(value, Field) else Field(value, MISSING, None)
                f.name = name
                flds[name] = f
                if f.default is not MISSING:
                    setattr(cls, name, f.default)
                elif name in cls.__dict__:
                    delattr(cls, name)
            cls.__dataclass_fields__ = flds
            cls.__init__ = _init
            cls.__setattr__ = _frozen_setattr
            cls.__delattr__ = _frozen_setattr
            cls.__eq__ = _eq
            cls.__hash__ = _hash
            cls.__repr__ = _repr
            return cls

        return wrap if cls is None else wrap(cls)


__all__ = ["dataclass", "field", "fields", "is_dataclass", "replace"]
