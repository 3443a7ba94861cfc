"""Pattern separation (encoder) and pattern completion (decoder) networks.

Encoder: 4 conv layers, kernel 5, stride 2, padding 2, ReLU between them: ×16
downsampling (28 px → 2 px). Decoder: the mirror image, 4 transposed convs (kernel 5,
stride 2, padding 2, output padding 1), ReLU between, sigmoid output, cropped to the input
size. Paper widths: encoder (128, 128, 128, 192), decoder (128, 128, 128, C_in); here
they come from params so that small images get small nets.
"""

from __future__ import annotations

import torch
from torch import nn


def separation_net(in_channels: int, widths: list[int] | tuple[int, ...]) -> nn.Sequential:
    """(N, C, H, W) in [0, 1] → cue (N, widths[-1], ⌈H/16⌉, ⌈W/16⌉), unbounded floats."""
    layers: list[nn.Module] = []
    c = in_channels
    for i, w in enumerate(widths):
        layers.append(nn.Conv2d(c, w, 5, stride=2, padding=2))
        if i < len(widths) - 1:
            layers.append(nn.ReLU())
        c = w
    return nn.Sequential(*layers)


class CompletionNet(nn.Module):
    """Cue (N, D, h, w) → image (N, C, H, W) in [0, 1]."""

    def __init__(self, cue_channels: int, widths: list[int] | tuple[int, ...], out_shape: tuple[int, int, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = cue_channels
        chans = [*widths, out_shape[0]]
        for i, w in enumerate(chans):
            layers.append(nn.ConvTranspose2d(c, w, 5, stride=2, padding=2, output_padding=1))
            if i < len(chans) - 1:
                layers.append(nn.ReLU())
            c = w
        self.net = nn.Sequential(*layers)
        self.out_shape = out_shape

    def forward(self, cue: torch.Tensor) -> torch.Tensor:
        _, h, w = self.out_shape
        out = self.net(cue)[:, :, :h, :w]
        return out if self.training else out.clamp(0, 1)
