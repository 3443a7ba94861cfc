"""Import the built-in methods so that they register."""

from clsuite.methods import ewc, finetune, joint, replay  # noqa: F401
