"""The collector: receives heartbeats over UDP and MQTT, tracks liveness and loss.

Data flows one way: `receivers` (one module per transport, named in
`fleetbeat.registry.RECEIVERS`) -> `fleet.Fleet` (the state, under one lock; its
parts are `loss`, `liveness`, `eviction`, `budget`, `events`, `intake`, `device`)
-> `alerts` -> `notifiers`. `store` keeps the fleet in SQLite (`rows` is the row
codec); `http` (on `httpserver`, `httpmsg`, `httpfds`, `httpworkers`) and
`metrics` read it through `view.FleetView`, the read contract. `config` parses
`[collector]`, `service` runs it all. `fleetbeat status` is `commands.status`.
"""
