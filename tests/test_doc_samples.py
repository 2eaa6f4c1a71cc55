"""Every ```toml sample in a module docstring is a valid agent config (docs cannot drift)."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import fleetbeat
from fleetbeat.agent.config import parse_agent_config
from fleetbeat.config.loader import parse_toml

SAMPLES = []
for info in pkgutil.walk_packages(fleetbeat.__path__, "fleetbeat."):
    if ".collector" in info.name or info.name.endswith("__main__"):
        continue  # collector samples are checked against the collector's schema
    doc = importlib.import_module(info.name).__doc__ or ""
    for i, block in enumerate(re.findall(r"```toml\n(.*?)```", doc, re.S)):
        SAMPLES.append(pytest.param(block, id=f"{info.name}#{i}"))


def test_there_are_samples():
    """The sample scan finds the documented modules (udp, system, sampling, serial, mqtt...)."""
    assert len(SAMPLES) >= 6


@pytest.mark.parametrize("sample", SAMPLES)
def test_docstring_sample_is_valid(sample):
    """The sample validates as an agent config (its example file paths need not exist here)."""
    parse_agent_config(parse_toml(sample, "docstring"), "docstring", check_files=False)
