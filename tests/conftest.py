"""Shared fixtures: a real mosquitto broker and a tiny real TFLite bundle."""

pytest_plugins = ["fixtures_broker", "fixtures_model", "fixtures_daemon"]
