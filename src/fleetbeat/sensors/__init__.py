"""Sensors: what a device can read, one module each (registered in `fleetbeat.registry`).

`base` says what a sensor provides; modules import their libraries lazily.
"""
