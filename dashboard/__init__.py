"""The fleet dashboard: a small web service that shows what the bins publish over MQTT.

``smartbin dashboard --broker HOST[:PORT]`` subscribes to every bin's topics, keeps the
history in SQLite (:mod:`.store`) and serves one self-contained page plus a JSON API and a
CSV export (:mod:`.web`). Its runtime needs nothing beyond the ``device`` extra (paho-mqtt
and the standard library), so it runs on the broker's host or on a spare Pi.
"""
