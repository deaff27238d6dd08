"""Pretraining: the step (Algorithm 1), the epoch loop, ``pretrain()``, and the speed options the step runs with."""
