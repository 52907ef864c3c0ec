"""The queueing side of bulklabel: ``submit`` (listing sources, chunking them into tasks),
``status`` (job progress) and ``results`` (merging a job's shards).

It never imports TensorFlow or ``worker``, so it starts fast on any machine.
"""
