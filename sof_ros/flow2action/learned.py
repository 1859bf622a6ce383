"""Stage 3 of SOF (learned) and the heads it is compared with.

All predict a chunk of end-effector actions (MetaWorld: dx, dy, dz, gripper in [-1, 1]) from
proprioception and what carries the intent:
  Flow2ActionNet   the decoded flow plan and the current frame (ours),
  Flow2ActionNet(use_image=False)  the flow plan alone: the plan-only row, which shows how much of
                   the success the plan itself carries,
  Pixels2ActionNet the decoded change of future frames (pixel-space skills ablation: inverse dynamics),
  Skill2ActionNet  the skill tokens themselves (the paper's Skill2Action ablation),
  BCNet            the instruction embedding (behaviour cloning baseline, no skills at all).
They share one head (`_ActionHead`) and its options (f2a.pool, f2a.chunk, f2a.width).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sof_ros.config import Flow2ActionConfig, SkillConfig
from sof_ros.errors import SofError
from sof_ros.nn import ConvEncoder, flow_to_channels, image_to_tensor, register_flow_scale

PROPRIO_DIM = 4  # ee xyz (metres) + gripper opening
POOLS = ("mean", "flatten", "keypoints")
KEYPOINTS = 32


class SpatialSoftmax(nn.Module):
    """Feature maps (B, C, h, w) -> the expected image position (x, y in [-1, 1]) of each of k
    learned keypoint maps (B, 2k): a location finer than the map's cells, the pooling robot
    image policies use for precise reaching (Levine et al. 2016; robomimic, diffusion_policy)."""

    def __init__(self, cin: int, k: int = KEYPOINTS):
        super().__init__()
        self.maps = nn.Conv2d(cin, k, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        att = F.softmax(self.maps(x).flatten(2) / self.log_temperature.exp(), -1)  # (B, k, h*w)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(h * w, 2)  # (h*w, [x, y])
        return (att @ grid).flatten(1)


def chunk_length(cfg: Flow2ActionConfig, skill_cfg: SkillConfig) -> int:
    """Actions predicted per plan: f2a.chunk, or the control steps one skill segment spans."""
    return int(cfg.chunk) or skill_cfg.segment * skill_cfg.stride


class _ActionHead(nn.Module):
    """Spatial input (B, C, r, r) + a vector -> (B, T, 4) actions in [-1, 1].

    pool "mean" (v1) averages the conv features over the image, "flatten" keeps their 4x4 layout, so
    the head knows *where* the gripper and the plan's motion are, not only that they exist;
    "keypoints" adds to the average where 32 learned keypoints are, to a fraction of a cell."""

    def __init__(self, cin: int, vec_dim: int, cfg: Flow2ActionConfig, horizon: int, res: int):
        super().__init__()
        if cfg.pool not in POOLS:
            raise SofError(f"f2a.pool must be one of {POOLS}, got '{cfg.pool}'")
        self.horizon = horizon
        self.use_proprio = cfg.use_proprio
        self.flatten = cfg.pool == "flatten"
        if self.flatten:
            stages = max(1, int(math.log2(res // 4)))
        else:
            stages = 2 if cfg.pool == "keypoints" else 3
        self.enc = ConvEncoder(cin, cfg.width, stages)
        self.keypoints = SpatialSoftmax(self.enc.out_channels) if cfg.pool == "keypoints" else None
        d = self.enc.out_channels * (16 if self.flatten else 1) + (2 * KEYPOINTS if self.keypoints is not None else 0)
        extra = vec_dim + (PROPRIO_DIM if cfg.use_proprio else 0)
        self.mlp = nn.Sequential(nn.Linear(d + extra, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU(),
                                 nn.Linear(256, horizon * 4))

    def forward(self, spatial, vec, proprio):
        feats = self.enc(spatial)[-1]
        x = feats.flatten(1) if self.flatten else feats.mean((2, 3))
        if self.keypoints is not None:
            x = torch.cat([x, self.keypoints(feats)], 1)
        parts = [x] + ([vec] if vec is not None else []) + ([proprio] if self.use_proprio else [])
        return torch.tanh(self.mlp(torch.cat(parts, 1))).view(-1, self.horizon, 4)


def _image(image: torch.Tensor, res: int) -> torch.Tensor:
    img = image_to_tensor(image)
    return img if img.shape[-1] == res else F.interpolate(img, size=res, mode="bilinear", align_corners=False)


class Flow2ActionNet(nn.Module):
    per_step = 2  # flow (dx, dy) per plan step

    def __init__(self, cfg: Flow2ActionConfig, skill_cfg: SkillConfig, use_image: bool = True):
        super().__init__()
        self.skill_cfg = skill_cfg
        self.use_image = use_image
        register_flow_scale(self, skill_cfg.flow_scale, self.per_step)  # the skill model's measured scale, copied
        cin = self.per_step * skill_cfg.segment + (3 if use_image else 0)
        self.head = _ActionHead(cin, 0, cfg, chunk_length(cfg, skill_cfg), skill_cfg.flow_res)

    def forward(self, plan, image, proprio):
        x = flow_to_channels(plan, self.scale)
        if self.use_image:
            x = torch.cat([x, _image(image, self.skill_cfg.flow_res)], 1)
        return self.head(x, None, proprio)


class Pixels2ActionNet(Flow2ActionNet):
    """Actions from the predicted change of H future frames (B, H, r, r, 3) and the current frame."""

    per_step = 3


class Skill2ActionNet(nn.Module):
    def __init__(self, cfg: Flow2ActionConfig, skill_cfg: SkillConfig, codebook_size: int):
        super().__init__()
        self.skill_cfg = skill_cfg
        self.emb = nn.Embedding(codebook_size, 32)
        self.head = _ActionHead(3, 32 * skill_cfg.tokens_per_segment, cfg, chunk_length(cfg, skill_cfg),
                                skill_cfg.flow_res)

    def forward(self, tokens, image, proprio):
        return self.head(_image(image, self.skill_cfg.flow_res), self.emb(tokens).flatten(1), proprio)


class BCNet(nn.Module):
    def __init__(self, cfg: Flow2ActionConfig, skill_cfg: SkillConfig, text_dim: int):
        super().__init__()
        self.skill_cfg = skill_cfg
        self.text = nn.Sequential(nn.Linear(text_dim, 128), nn.SiLU())
        self.head = _ActionHead(3, 128, cfg, chunk_length(cfg, skill_cfg), skill_cfg.flow_res)

    def forward(self, text, image, proprio):
        return self.head(_image(image, self.skill_cfg.flow_res), self.text(text), proprio)


def random_shift(image: torch.Tensor, plan: torch.Tensor | None, pad: int, generator=None):
    """DrQ-style random shift: every sample's image (B, S, S, 3) uint8 and plan (B, H, r, r, C) move by
    the same random offset of up to +-pad working (plan) pixels, edges replicated. Flow vectors are
    unchanged by a translation, so the shifted plan is still the plan of the shifted image."""
    if pad <= 0:
        return image, plan
    b = image.shape[0]
    r = plan.shape[2] if plan is not None else image.shape[1]
    ratio = image.shape[1] / r
    dx = torch.randint(-pad, pad + 1, (b,), generator=generator).to(image.device)
    dy = torch.randint(-pad, pad + 1, (b,), generator=generator).to(image.device)

    def shift(x: torch.Tensor, scale: float) -> torch.Tensor:  # x (B, S, S, ...)
        s, dev = x.shape[1], x.device  # indices on the tensor's device (CUDA training)
        rows = (torch.arange(s, device=dev)[None] - (dy[:, None] * scale).round().long()).clamp(0, s - 1)  # (B, S)
        cols = (torch.arange(s, device=dev)[None] - (dx[:, None] * scale).round().long()).clamp(0, s - 1)
        bi = torch.arange(b, device=dev)[:, None, None]
        return x[bi, rows[:, :, None], cols[:, None, :]]

    image = shift(image, ratio)
    if plan is not None:  # (B, H, r, r, C): move the spatial axes
        plan = shift(plan.transpose(1, 3).transpose(1, 2), 1.0).transpose(1, 2).transpose(1, 3)
    return image, plan
