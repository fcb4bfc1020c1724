"""Tiny random Qwen3-VL checkpoints and generated pictures and videos, built locally and seeded:
what the tests, the demo and the benchmarks run on (no model hub needed). Not part of the
runtime; needs torch and transformers."""
