"""Transport of results: the outbox, MQTT, Home Assistant discovery, commands."""
