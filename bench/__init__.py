"""Hubbub's own MQTT benchmark harness: a raw-socket load generator and broker runners.

Run ``python -m bench relay --help`` from the repository root. Nothing here is imported by the
platform itself; it exists to compare the project's broker with stock amqtt and Mosquitto.
"""
