"""Serving: the distributed worker.

``supervisor`` starts one ``process`` per GPU (pinned before TensorFlow loads) and restarts
it if it dies; each process loads the model once and runs ``tasks.process_chunk`` for every
chunk message Celery delivers.
"""
