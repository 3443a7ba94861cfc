"""Import the built-in methods so that they register."""

from clsuite.methods import der, der_expandable, ewc, finetune, icarl, joint, lwf, mgser, replay  # noqa: F401
