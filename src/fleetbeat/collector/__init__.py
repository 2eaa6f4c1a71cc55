"""The collector: receives heartbeats over UDP and MQTT, tracks liveness and loss.

`fleet.Fleet` holds the state (its docstring is the contract the HTTP side reads),
`receivers` feed it, `store` keeps it in SQLite, `service` runs it all.
"""
