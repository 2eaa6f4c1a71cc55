"""Outputs (where payloads go) and encoders (how messages become payloads), one module each.

`base` says what each provides; `fleetbeat.registry` names them. Modules import
their libraries only when configured, so an agent without MQTT never loads paho.
"""
