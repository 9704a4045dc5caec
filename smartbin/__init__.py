"""smartbin: classify waste items in a bin and report over MQTT.

The code lives in one namespace: ``smartbin.device`` (the bin, no TensorFlow),
``smartbin.train`` and ``smartbin.convert`` (model pipeline, TensorFlow/Keras),
``smartbin.benchmarks`` (on-device figures).
"""

__version__ = "0.1.0"
