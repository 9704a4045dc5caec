"""On-device benchmarks: scripts that print latency and accuracy figures (never pass/fail)."""
