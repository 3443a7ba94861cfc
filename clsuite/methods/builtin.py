"""Import the built-in methods so that they register."""

from clsuite.methods import der, der_expandable, ewc, finetune, icarl, joint, lwf, mgser, replay  # noqa: F401
from clsuite.methods.braincl import method as braincl  # noqa: F401,E402
from clsuite.methods import avalanche  # noqa: F401,E402  (the avalanche.<name> zoo)
# issue #21 built-in staples (Mammoth / PyCIL)
from clsuite.methods import er_ace, er_aml, foster, gdumb, lucir, memo, podnet, wa, x_der  # noqa: F401,E402
# prompt methods on a frozen ViT (timm; the pretrained weights from a user-given checkpoint)
from clsuite.methods.prompts import methods as prompts  # noqa: F401,E402
