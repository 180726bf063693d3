"""Training: the standard supervised loop (:mod:`.standard`) and the run's recipes built on
it (:mod:`.recipes`: the baseline's training, hardening, adversarial or with AugMix
(:mod:`.augmix`), and group-balanced retraining). The recipes are imported from their
module, not from here: they use the attack probe, which itself uses :mod:`.standard`."""

from auditclf.train.standard import TrainHistory, train_classifier

__all__ = ["TrainHistory", "train_classifier"]
