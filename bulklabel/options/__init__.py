"""Every option of the command line, declared once (see ``core``), grouped by what it sets.

``inference``: the model, the engine and TensorFlow (classify, evaluate, worker, train);
``distributed``: Redis, queues, jobs and shared display options; ``training``: train.
The option sets (``ModelOptions``, ``EngineOptions``, ``RuntimeOptions``, ``TrainOptions``)
are plain frozen dataclasses that the worker side takes as they are.
"""

from .core import Option, add_options, from_args, options_of, setting
from .inference import EngineOptions, ModelOptions, RuntimeOptions
from .training import TrainOptions

__all__ = ["Option", "add_options", "from_args", "options_of", "setting",
           "EngineOptions", "ModelOptions", "RuntimeOptions", "TrainOptions"]
