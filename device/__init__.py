"""The bin: frame sources, presence detection, classification and MQTT reporting.

Also the home of the contract shared by every stage (labels, preprocessing, the model
bundle), so that training and conversion import it from here and a bin needs no TensorFlow.
"""
