"""Factorised entropy model of integer cues and real range coding with ``constriction``.

Per cue channel c, a learned categorical p_c over the integers −R…R defines a
piecewise-linear CDF with knots at the half-integers (F_c(k + ½) = Σ_{j≤k} p_c(j)), as
in the non-parametric factorised prior of Ballé et al. (2018). The likelihood of a
value v is F_c(v + ½) − F_c(v − ½): for integer v it is exactly p_c(v) (what the coder
uses); for the noisy training values v = y + u, u ~ U(−½, ½), it interpolates, so it is
differentiable in v and in the model. Values are clamped to [−R, R].

Coding uses constriction's range coder (a maintained Rust library; ``compressai`` pins
numpy < 2) with one ``Categorical`` model per channel, on exactly the probabilities the
loss was trained with.
"""

from __future__ import annotations

import constriction
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PROB_FLOOR = 1e-6  # every symbol keeps a nonzero probability so that it stays codable


class FactorizedEntropyModel(nn.Module):
    def __init__(self, channels: int, max_symbol: int = 15) -> None:
        super().__init__()
        self.channels = channels
        self.max_symbol = max_symbol
        k = 2 * max_symbol + 1
        # start uniform: a peaked start leaves near-zero mass (and gradient) where the
        # untrained encoder's cues fall, and the model then never learns to cover them
        self.logits = nn.Parameter(torch.zeros(channels, k))
        self.n_symbols = k

    def pmf(self) -> torch.Tensor:
        """(C, 2R + 1) probabilities of −R…R, each ≥ PROB_FLOOR / (2R + 1)."""
        p = F.softmax(self.logits, dim=1)
        return (1 - PROB_FLOOR) * p + PROB_FLOOR / self.n_symbols

    def bound(self, y: torch.Tensor) -> torch.Tensor:
        """Soft bound of raw encoder outputs into (−R − ½, R + ½): (R + ½)·tanh(y / (R + ½)).

        Near 0 it is the identity; it keeps every rounded cue inside the coder's alphabet
        and stops the runaway growth of unbounded outputs (with a hard clamp, outputs past
        ±R get no gradient from the bits term and the recall gradient keeps pushing them
        out: |y| reached 4e7 in our runs).
        """
        s = self.max_symbol + 0.5
        return s * torch.tanh(y / s)

    def quantize(self, y: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Bounded cue: training adds noise U(−½, ½) (reparameterised); else rounds to integers.

        ``y`` are raw encoder outputs (any real); :meth:`bound` maps them into the alphabet's
        range first. The noisy value is clamped to [−R − ½, R + ½] by construction.
        """
        b = self.bound(y)
        if noise is None:
            return torch.round(b).clamp(-self.max_symbol, self.max_symbol)
        return b + noise

    def likelihood(self, v: torch.Tensor) -> torch.Tensor:
        """Per-element probability mass of ``v`` (N, C, h, w) under the piecewise-linear CDF."""
        r = self.max_symbol
        p = self.pmf()  # (C, K)
        cum = torch.cat([torch.zeros_like(p[:, :1]), p.cumsum(1)], dim=1)  # (C, K + 1) at −R−½ … R+½

        def cdf(x: torch.Tensor) -> torch.Tensor:
            pos = (x + r + 0.5).clamp(0, self.n_symbols)  # knot coordinate
            i = pos.floor().clamp(max=self.n_symbols - 1).long()
            frac = pos - i
            c_idx = torch.arange(self.channels, device=x.device).view(1, -1, 1, 1).expand_as(i)
            return cum[c_idx, i] + frac * p[c_idx, i]

        return cdf(v + 0.5) - cdf(v - 0.5)

    def bits(self, v: torch.Tensor) -> torch.Tensor:
        """Total information content −Σ log2 likelihood(v), a scalar (bits)."""
        return -torch.log2(self.likelihood(v).clamp_min(1e-12)).sum()

    # -- real coding -----------------------------------------------------------------
    def _models(self) -> list:
        pmf = self.pmf().detach().double().cpu().numpy()
        return [constriction.stream.model.Categorical(pmf[c], perfect=False) for c in range(self.channels)]

    def encode(self, cues: torch.Tensor) -> bytes:
        """Integer cues (N, C, h, w) in [−R, R] → one range-coded byte string."""
        sym = cues.detach().cpu().round().long().numpy() + self.max_symbol
        if sym.min(initial=0) < 0 or sym.max(initial=0) >= self.n_symbols:
            raise ValueError(f"cues must lie in [-{self.max_symbol}, {self.max_symbol}]")
        enc = constriction.stream.queue.RangeEncoder()
        for c, model in enumerate(self._models()):
            enc.encode(np.ascontiguousarray(sym[:, c].reshape(-1), dtype=np.int32), model)
        return enc.get_compressed().tobytes()

    def decode(self, data: bytes, shape: tuple[int, int, int, int]) -> torch.Tensor:
        """Inverse of :meth:`encode`: (N, C, h, w) float32 integer-valued cues."""
        n, c, h, w = shape
        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype=np.uint32).copy())
        out = np.empty((n, c, h * w), dtype=np.int64)
        for ch, model in enumerate(self._models()):
            out[:, ch] = dec.decode(model, n * h * w).reshape(n, h * w)
        return torch.from_numpy(out.reshape(n, c, h, w) - self.max_symbol).float()
