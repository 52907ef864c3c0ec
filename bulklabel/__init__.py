"""bulklabel: label whole image archives with a Keras image classifier.

This package holds what every side shares (settings, errors, the record schema and its
writers, source listing, storage, progress display) and the ``bulklabel`` command line.
It never imports TensorFlow: the model side lives in ``worker``, the queueing side in
``producer``.
"""

import time

__version__ = "0.1.0"
STARTED = time.perf_counter()  # when the process began, nearly: what --profile's start-up counts from
