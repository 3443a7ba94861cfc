"""Prompt-based continual learning on a frozen pretrained ViT: L2P (Wang et al., CVPR 2022),
DualPrompt (Wang et al., ECCV 2022) and CODA-Prompt (Smith et al., CVPR 2023).

The backbone is a timm ViT whose weights come from a checkpoint file the user gives
(:mod:`clsuite.methods.prompts.vit`; nothing is downloaded at run time), or a small randomly
initialised ViT (``arch: tiny``) for tests and pipeline checks, whose numbers say nothing about
the papers. The prompts, their keys and the classifier head train; the backbone stays frozen.
"""
