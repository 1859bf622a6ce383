"""Stage 1 of SOF: a flow-segment autoencoder whose bottleneck is Finite Scalar Quantization.

The encoder sees H consecutive flow fields; the decoder sees only the skill tokens and the
first frame, so the tokens must carry *how things move* while the frame says *where*.

The same network over how H future *frames* change instead of flow (`PixelSkillAutoencoder`) is
the paper's pixel-space skills ablation: tokens of next-frame prediction rather than of motion.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import FSQ

from sof_ros.config import SkillConfig
from sof_ros.nn import ConvEncoder, ResBlock, channels_to_flow, flow_to_channels, image_to_tensor, register_flow_scale


class SkillAutoencoder(nn.Module):
    per_step = 2  # channels per time step of the segment: flow (dx, dy)

    def __init__(self, cfg: SkillConfig):
        super().__init__()
        self.cfg = cfg
        register_flow_scale(self, cfg.flow_scale, self.per_step)
        stages = int(math.log2(cfg.flow_res // 4))  # down to a 4x4 grid
        self.flow_enc = ConvEncoder(self.per_step * cfg.segment, cfg.width, stages)
        code_dim = len(cfg.fsq_levels)
        self.to_code = nn.Linear(self.flow_enc.out_channels * 16, cfg.tokens_per_segment * code_dim)
        self.fsq = FSQ(levels=list(cfg.fsq_levels))
        self.codebook_size = self.fsq.codebook_size
        # first-frame conditioning: image at image_res, brought to flow_res first
        self.img_enc = ConvEncoder(3, cfg.width // 2, stages)
        c_top = self.flow_enc.out_channels
        self.from_code = nn.Linear(cfg.tokens_per_segment * code_dim, c_top * 16)
        ups = []
        chans = self.flow_enc.channels[::-1]  # coarse -> fine
        img_chans = self.img_enc.channels[::-1]
        for i in range(stages):
            ups.append(ResBlock(chans[i] + img_chans[i], chans[i + 1]))
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv2d(chans[-1] + img_chans[-1], self.per_step * cfg.segment, 3, 1, 1)

    # tokens <-> codes ---------------------------------------------------------------------
    def encode(self, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """flow (B, H, r, r, 2) -> (quantized codes (B, n, d), token ids (B, n))."""
        x = self.flow_enc(flow_to_channels(flow, self.scale))[-1]
        z = self.to_code(x.flatten(1)).view(x.shape[0], self.cfg.tokens_per_segment, -1)
        codes, ids = self.fsq(z)
        return codes, ids.long()

    def codes_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fsq.indices_to_codes(ids.long())

    def decode(self, codes: torch.Tensor, first_frame: torch.Tensor) -> torch.Tensor:
        """codes (B, n, d), first_frame (B, S, S, 3) uint8 -> flow (B, H, r, r, 2)."""
        img = image_to_tensor(first_frame)
        if img.shape[-1] != self.cfg.flow_res:
            img = F.interpolate(img, size=self.cfg.flow_res, mode="bilinear", align_corners=False)
        img_feats = self.img_enc(img)[::-1]
        x = self.from_code(codes.flatten(1)).view(codes.shape[0], -1, 4, 4)
        for i, up in enumerate(self.ups):
            x = up(torch.cat([x, img_feats[i]], 1))
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.head(torch.cat([x, img_feats[-1]], 1))
        return channels_to_flow(x, self.scale, self.per_step)

    def decode_ids(self, ids: torch.Tensor, first_frame: torch.Tensor) -> torch.Tensor:
        return self.decode(self.codes_from_ids(ids), first_frame)

    def forward(self, flow: torch.Tensor, first_frame: torch.Tensor):
        codes, ids = self.encode(flow)
        return self.decode(codes, first_frame), ids


class PixelSkillAutoencoder(SkillAutoencoder):
    """Pixel-space skills: tokens of how H future frames differ from the first one, (B, H, r, r, 3)
    in [-2, 2] (colour change, not motion). Same encoder, FSQ and decoder as the flow version."""

    per_step = 3

    def future_frames(self, changes: torch.Tensor, first_frame: torch.Tensor) -> torch.Tensor:
        """Decoded changes + the first frame (B, S, S, 3) uint8 -> future frames in [-1, 1]."""
        img = image_to_tensor(first_frame)
        if img.shape[-1] != changes.shape[2]:
            img = F.interpolate(img, size=changes.shape[2], mode="area")
        return (img.permute(0, 2, 3, 1)[:, None] + changes).clamp(-1, 1)


def epe(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean end-point error over all pixels and steps (same units as the flow), or over `mask`."""
    err = (pred - target).norm(dim=-1)
    return err.mean() if mask is None else err[mask].mean()


def weighted_flow_loss(pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor, moving: torch.Tensor,
                       moving_weight: float) -> torch.Tensor:
    """Smooth-L1 on flow in network units (divided by `scale`), each pixel weighted 1 + moving_weight when it
    moves, normalised by the total weight: with a normalised scale the moving pixels sit in the loss's
    linear part instead of its quadratic one, and the few moving pixels are not drowned by the static ones."""
    err = F.smooth_l1_loss(pred / scale, target / scale, reduction="none").sum(-1)
    w = 1.0 + moving_weight * moving.float()
    return (err * w).sum() / w.sum()


def codebook_usage(ids: torch.Tensor, codebook_size: int) -> dict[str, float]:
    counts = torch.bincount(ids.flatten(), minlength=codebook_size).float()
    p = counts / counts.sum()
    nz = p[p > 0]
    return {"perplexity": float(torch.exp(-(nz * nz.log()).sum())),
            "fraction_used": float((counts > 0).float().mean()),
            "codes_used": int((counts > 0).sum())}
