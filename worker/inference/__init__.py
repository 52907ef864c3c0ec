"""Inference: the one engine (read → decode → batch → predict → write) and what it runs.

Used by ``classify`` and ``evaluate`` in this process and by every worker process.
"""
