"""Small building blocks shared by the three SOF stages (sized for CPU training)."""
from __future__ import annotations

import torch
from torch import nn


def norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1), norm(cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, 1, 1), norm(cout),
        )
        self.skip = nn.Identity() if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class ConvEncoder(nn.Module):
    """Image-like input -> feature maps at every scale (finest first), halving resolution per stage."""

    def __init__(self, cin: int, width: int, stages: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, width, 3, 1, 1), nn.SiLU())
        chans = [width * min(2 ** i, 4) for i in range(stages + 1)]
        self.stages = nn.ModuleList(ResBlock(chans[i], chans[i + 1], stride=2) for i in range(stages))
        self.out_channels = chans[-1]
        self.channels = chans

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # NCHW, never channels-last: oneDNN 3.12's AVX2 backward-data kernel for a 1x1 stride-2
        # convolution (`brgconv_strided:avx2`, our ResBlock skip) writes past the gradient buffer
        # when the input is channels-last with fewer than 8 channels: heap corruption on CPUs
        # without AVX-512 (test/test_ddp.py reproduces it with ONEDNN_MAX_CPU_ISA=AVX2).
        feats = [self.stem(x.contiguous())]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


def image_to_tensor(rgb: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1], NCHW-contiguous.

    Not a permuted view: a channels-last tensor would send every conv after it down oneDNN's
    channels-last kernels (see `ConvEncoder.forward`)."""
    return rgb.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def tensor_to_image(x: torch.Tensor) -> torch.Tensor:
    """(..., 3) float in [-1, 1] -> uint8, the inverse of image_to_tensor's scaling (channels last)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte()


def register_flow_scale(module: nn.Module, flow_scale: float, per_step: int) -> None:
    """`module.scale`: flow units per network unit -- skill.flow_scale, or (flow_scale 0) the training
    flow's std that sof-train measures and stores; a buffer saved with the weights only then, so it
    travels with them. Predicted frames (per_step 3) are not flow and keep 1."""
    measured = flow_scale == 0 and per_step == 2
    module.register_buffer("scale", torch.tensor(float(flow_scale or 1.0) if per_step == 2 else 1.0),
                           persistent=measured)


def flow_to_channels(flow: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, T, h, w, C) -> (B, C*T, h, w); C is 2 for flow, 3 for predicted frames."""
    b, t, h, w, c = flow.shape
    return (flow / scale).permute(0, 1, 4, 2, 3).reshape(b, c * t, h, w)


def channels_to_flow(x: torch.Tensor, scale: float, per_step: int = 2) -> torch.Tensor:
    """(B, C*T, h, w) -> (B, T, h, w, C), the inverse of flow_to_channels."""
    b, c, h, w = x.shape
    return (x * scale).reshape(b, c // per_step, per_step, h, w).permute(0, 1, 3, 4, 2)
