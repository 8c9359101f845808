"""A per-frame convolutional refiner of the DiT's flow prediction (TransformerConfig.refine_channels).

A token of the shapes DiT (patch 1 x 4 x 4) covers 4 x 4 latent pixels, 16 x 16 video pixels, and the output head
is one linear map from the token's state to those 256 numbers: an object's edge inside a token, or a 10-px object
that straddles two, is drawn by that map alone, and the models' shapes come out as blobs. The refiner looks at the
head's prediction and at the model's input x_t at full latent resolution, with three 3 x 3 convolutions per frame
(kernels 1 x 3 x 3: nothing mixes across frames, so block-causal training, streaming and the KV cache are
unchanged), modulated by the frame's time embedding, and adds a correction. Its last convolution starts at zero, so
a trained model that gains it computes what it did until training moves it (distill/grow.py). Framecast models
only; not in Wan. On the shapes teacher it lowered the training loss and the eval (docs/DISTILL.md, "The latent
refiner"): off in every shipped model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(c_in: int, c_out: int) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, kernel_size=(1, 3, 3), padding=(0, 1, 1))


class LatentRefiner(nn.Module):
    def __init__(self, channels: int, hidden: int, time_dim: int):
        super().__init__()
        self.conv_in = _conv(2 * channels, hidden)  # [flow | x_t]
        self.time = nn.Linear(time_dim, 2 * hidden)  # the frame's time embedding -> per-channel scale and shift
        self.conv_mid = _conv(hidden, hidden)
        self.conv_out = _conv(hidden, channels)
        nn.init.zeros_(self.conv_out.weight)  # zero: a model that gains it computes what it did
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, flow: torch.Tensor, x_t: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """flow, x_t [B, C, F, H, W]; temb [B, F, E], one per latent frame -> the refined flow [B, C, F, H, W]."""
        dtype = self.conv_in.weight.dtype
        h = self.conv_in(torch.cat([flow, x_t], 1).to(dtype))  # [B, hidden, F, H, W]
        scale, shift = self.time(temb.to(dtype)).permute(0, 2, 1)[..., None, None].chunk(2, dim=1)  # [B, hidden, F, 1, 1]
        h = F.silu(h * (1 + scale) + shift)
        h = F.silu(self.conv_mid(h))
        return flow + self.conv_out(h).to(flow.dtype)
