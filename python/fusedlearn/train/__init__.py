"""Training: :func:`fit` (seeded shuffling, progress bar, evaluation, callbacks such as
:class:`EarlyStopping`, schedulers, history as CSV/JSON and PNG, checkpoints with exact resume),
:func:`evaluate` and :func:`predict`; :func:`cascade` (layer-wise cascade learning)."""
from .callbacks import Callback, EarlyStopping, LambdaCallback
from .history import plot_history, write_history
from .loop import evaluate, fit, predict
from .bptt import bptt_step, fit_sequences, train_tbptt
from .adversarial import AdversarialFeatures, augmented, kl_divergence
from .cascade import CascadeResult, cascade, default_head

__all__ = ["fit", "evaluate", "predict", "Callback", "EarlyStopping", "LambdaCallback", "write_history",
           "plot_history"]
__all__ += ["bptt_step", "fit_sequences", "train_tbptt"]
__all__ += ["AdversarialFeatures", "augmented", "kl_divergence"]
__all__ += ["cascade", "default_head", "CascadeResult"]
