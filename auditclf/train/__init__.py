"""Training: standard supervised training (adversarial training plugs in beside it)."""

from auditclf.train.standard import TrainHistory, train_classifier

__all__ = ["TrainHistory", "train_classifier"]
