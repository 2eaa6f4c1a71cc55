"""Liveness: the states a device can be in."""

from __future__ import annotations

STATES = ("up", "late", "down", "offline")
