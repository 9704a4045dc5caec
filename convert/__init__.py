"""Conversion: int8 post-training quantisation, op checks, Edge TPU, the model bundle."""
