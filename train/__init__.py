"""Training: data discovery and splits, the two-head Keras model, fitting, evaluation report."""
