"""Evaluation metrics: pure functions on arrays, batched and jit-able."""
