"""config.frozen behaves like dataclasses(frozen=True) for everything config classes use."""

from __future__ import annotations

import dataclasses

import pytest

from fleetbeat.config import frozen


def make(mod):
    @mod.dataclass(frozen=True)
    class Inner:
        x: int = 1

    @mod.dataclass(frozen=True)
    class Rec:
        a: int
        b: str = "b"
        c: tuple = mod.field(default=(1, 2), metadata={"k": "v"})
        d: Inner = mod.field(default_factory=Inner)

    return Rec, Inner


@pytest.mark.parametrize("mod", [dataclasses, frozen], ids=["dataclasses", "frozen"])
def test_same_behaviour_as_dataclasses(mod):
    """Defaults, factories, positional and keyword args, eq, hash, repr, fields, replace, frozen."""
    Rec, Inner = make(mod)
    r = Rec(5)
    assert (r.a, r.b, r.c, r.d) == (5, "b", (1, 2), Inner())
    assert Rec(5, "x") == Rec(a=5, b="x") != Rec(6)
    assert hash(Rec(5)) == hash(Rec(5))
    assert repr(Rec(5)).endswith("Rec(a=5, b='b', c=(1, 2), d=" + repr(Inner()) + ")")
    assert [f.name for f in mod.fields(Rec)] == ["a", "b", "c", "d"]
    assert mod.fields(Rec)[2].metadata["k"] == "v"
    assert mod.is_dataclass(r) and not mod.is_dataclass(object())
    assert mod.replace(r, b="z") == Rec(5, "z")
    assert Rec.b == "b"
    with pytest.raises(AttributeError):
        r.a = 6  # type: ignore[misc]
    with pytest.raises(TypeError):
        Rec()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Rec(1, nope=2)  # type: ignore[call-arg]


def test_config_classes_use_the_light_records():
    """No module imports dataclasses: option() fields only work with config.frozen records."""
    import pathlib
    import re

    src = pathlib.Path(frozen.__file__).resolve().parents[1]
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name != "frozen.py"
        and re.search(r"^\s*(from dataclasses import|import dataclasses)", p.read_text(), re.M)
    ]
    assert offenders == [], "use fleetbeat.config.frozen instead of dataclasses"
