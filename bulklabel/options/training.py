"""Options of ``bulklabel train``.

Training's own options are read from the command line only (a training run is a deliberate,
one-off command); the options it shares with serving (``--weights``, ``--preprocess``,
``--unsafe-model``, ``--decode-threads``) are the same declarations, environment included.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import settings
from .core import Option, setting
from .inference import DECODE_THREADS, PREPROCESS, UNSAFE_MODEL, WEIGHTS


def _train(flags: tuple[str, ...], default, parse, help: str, metavar: str | None = None) -> Option:
    return Option(flags, help=help, default=default, parse=parse, metavar=metavar, env=None)


BASE = _train(("--base",), "Xception", settings.text,
              "a Keras Applications name (default Xception) or a saved model to transfer from "
              "(a bulklabel model's head is continued for the classes DATA shares with it)")
TRAIN_SIZE = _train(("--image-size",), None, settings.optional_positive,
                    "train at NxN (default: the base's size)", "N")
SIZES = _train(("--sizes",), None, settings.size_list,
               "train at N first, then continue at M (e.g. 150,299)", "N,M")
EPOCHS = _train(("--epochs",), "10", settings.positive_int, "phase 1 epochs (default 10)")
LR = _train(("--lr",), "1e-3", settings.number, "phase 1 learning rate (default 1e-3)")
DROPOUT = _train(("--dropout",), "0.2", settings.number, "dropout before the new head (default 0.2)")
FINE_TUNE_LAYERS = _train(("--fine-tune-layers",), "30", settings.non_negative_int,
                          "top base layers to unfreeze in phase 2; 0 skips it (default 30)", "N")
FINE_TUNE_EPOCHS = _train(("--fine-tune-epochs",), "10", settings.non_negative_int,
                          "phase 2 epochs (default 10)")
FINE_TUNE_LR = _train(("--fine-tune-lr",), "1e-5", settings.number,
                      "phase 2 learning rate (default 1e-5)")
AUGMENT = Option(("--augment",), switch=True, default=True, parse=settings.boolean, env=None,
                 help="random flip, rotation, zoom and contrast on training images (default on)")
TRAIN_BATCH_SIZE = _train(("--batch-size",), "32", settings.positive_int,
                          "images per training step (default 32)", "N")
VAL_SPLIT = _train(("--val-split",), "0.2", settings.number,
                   "held-out share of each class when DATA has no val/ (default 0.2)")
SEED = _train(("--seed",), "1337", lambda v, what: settings.whole_number(v, what, 0),
              "seed for splits, shuffling, augmentation, init (default 1337)")
PATIENCE = _train(("--patience",), "4", settings.non_negative_int,
                  "epochs without progress before stopping a phase (default 4)")


@dataclass(frozen=True)
class TrainOptions:
    base: str = setting(BASE)
    weights: str | None = setting(WEIGHTS)          # None: imagenet
    image_size: int | None = setting(TRAIN_SIZE)
    sizes: list[int] = setting(SIZES)               # empty: image_size, else the base's size
    epochs: int = setting(EPOCHS)
    lr: float = setting(LR)
    dropout: float = setting(DROPOUT)
    fine_tune_layers: int = setting(FINE_TUNE_LAYERS)
    fine_tune_epochs: int = setting(FINE_TUNE_EPOCHS)
    fine_tune_lr: float = setting(FINE_TUNE_LR)
    augment: bool = setting(AUGMENT)
    batch_size: int = setting(TRAIN_BATCH_SIZE)
    val_split: float = setting(VAL_SPLIT)
    seed: int = setting(SEED)
    patience: int = setting(PATIENCE)
    preprocess: str | None = setting(PREPROCESS)    # for a saved-model base without metadata
    unsafe: bool = setting(UNSAFE_MODEL)
    decode_threads: int = setting(DECODE_THREADS)
    verbose: int | None = None   # Keras fit verbosity; None: a bar on a terminal, else a line per epoch

    def stage_sizes(self) -> list[int]:
        """The sizes to train at, in order; empty means the base's own size."""
        return list(self.sizes) or ([self.image_size] if self.image_size else [])
