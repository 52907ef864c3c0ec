"""The queueing side of bulklabel: listing sources, chunking them into tasks, job status.

It never imports TensorFlow, so it starts fast on any machine. (The distributed commands
``submit``, ``status`` and ``results`` are being built here; ``classify`` runs embedded.)
"""
