"""The model side of bulklabel, in three rooms, each for one audience:

* ``inference``: bytes → pixels → model → records (decode, preprocess, models, predictor,
  engine, metadata, runtime, and the embedded ``classify`` job);
* ``serving``: the distributed worker (Celery task, one process per GPU, its supervisor);
* ``training``: transfer learning and evaluation (dataset, trainer, evaluate, plots).

Importing these packages does not import TensorFlow; the modules that need it import it
when they are used, so that a process can pin its GPU before TensorFlow starts.
"""
