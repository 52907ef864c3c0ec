"""The model side of bulklabel: decoding, model loading, the engine and (later) Celery tasks.

Importing this package does not import TensorFlow; the modules that need it import it
when they are used, so that a process can pin its GPU before TensorFlow starts.
"""
