"""Commands of the `fleetbeat` CLI that are not the agent or the collector themselves."""
