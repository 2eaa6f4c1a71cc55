"""fleetbeat: at-most-once heartbeats and telemetry for fleets of small Linux devices."""

__version__ = "0.1.0"
