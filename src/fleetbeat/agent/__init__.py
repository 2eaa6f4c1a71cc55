"""The agent: sensor -> sampler -> encoder -> output, at most once.

`config` is the composition root (TOML -> components, via `fleetbeat.registry`),
`pipeline` the Emitters and Channels a reading passes through, `heartbeat` what
a heartbeat carries, `reload` the SIGHUP plan, `runtime` the loop and signals;
`sampling` and `scheduler` are the two small engines underneath.
"""
