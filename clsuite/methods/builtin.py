"""Import the built-in methods so that they register."""

from clsuite.methods import der, ewc, finetune, joint, lwf, mgser, replay  # noqa: F401
