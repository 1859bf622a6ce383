"""Stage 3 of SOF (learned) and the two action heads it is compared with.

All three predict a chunk of H end-effector actions (MetaWorld: dx, dy, dz, gripper in [-1, 1])
from the current frame and proprioception; they differ only in what carries the intent:
  Flow2ActionNet   the decoded flow plan (ours),
  Pixels2ActionNet the decoded change of future frames (pixel-space skills ablation: inverse dynamics),
  Skill2ActionNet  the skill tokens themselves (the paper's Skill2Action ablation),
  BCNet            the instruction embedding (behaviour cloning baseline, no skills at all).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sof_ros.config import Flow2ActionConfig, SkillConfig
from sof_ros.nn import ConvEncoder, flow_to_channels, image_to_tensor

PROPRIO_DIM = 4  # ee xyz (metres) + gripper opening


class _ActionHead(nn.Module):
    """Spatial input (B, C, r, r) + a vector -> (B, H, 4) actions in [-1, 1]."""

    def __init__(self, cin: int, vec_dim: int, cfg: Flow2ActionConfig, horizon: int):
        super().__init__()
        self.horizon = horizon
        self.use_proprio = cfg.use_proprio
        self.enc = ConvEncoder(cin, cfg.width, 3)
        d = self.enc.out_channels
        extra = vec_dim + (PROPRIO_DIM if cfg.use_proprio else 0)
        self.mlp = nn.Sequential(nn.Linear(d + extra, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU(),
                                 nn.Linear(256, horizon * 4))

    def forward(self, spatial, vec, proprio):
        x = self.enc(spatial)[-1].mean((2, 3))
        parts = [x] + ([vec] if vec is not None else []) + ([proprio] if self.use_proprio else [])
        return torch.tanh(self.mlp(torch.cat(parts, 1))).view(-1, self.horizon, 4)


def _image(image: torch.Tensor, res: int) -> torch.Tensor:
    img = image_to_tensor(image)
    return img if img.shape[-1] == res else F.interpolate(img, size=res, mode="bilinear", align_corners=False)


class Flow2ActionNet(nn.Module):
    per_step = 2  # flow (dx, dy) per plan step

    def __init__(self, cfg: Flow2ActionConfig, skill_cfg: SkillConfig):
        super().__init__()
        self.skill_cfg = skill_cfg
        self.scale = skill_cfg.flow_scale if self.per_step == 2 else 1.0
        self.head = _ActionHead(self.per_step * skill_cfg.segment + 3, 0, cfg, skill_cfg.segment)

    def forward(self, plan, image, proprio):
        x = torch.cat([flow_to_channels(plan, self.scale), _image(image, self.skill_cfg.flow_res)], 1)
        return self.head(x, None, proprio)


class Pixels2ActionNet(Flow2ActionNet):
    """Actions from the predicted change of H future frames (B, H, r, r, 3) and the current frame."""

    per_step = 3


class Skill2ActionNet(nn.Module):
    def __init__(self, cfg: Flow2ActionConfig, skill_cfg: SkillConfig, codebook_size: int):
        super().__init__()
        self.skill_cfg = skill_cfg
        self.emb = nn.Embedding(codebook_size, 32)
        self.head = _ActionHead(3, 32 * skill_cfg.tokens_per_segment, cfg, skill_cfg.segment)

    def forward(self, tokens, image, proprio):
        return self.head(_image(image, self.skill_cfg.flow_res), self.emb(tokens).flatten(1), proprio)


class BCNet(nn.Module):
    def __init__(self, cfg: Flow2ActionConfig, skill_cfg: SkillConfig, text_dim: int):
        super().__init__()
        self.skill_cfg = skill_cfg
        self.text = nn.Sequential(nn.Linear(text_dim, 128), nn.SiLU())
        self.head = _ActionHead(3, 128, cfg, skill_cfg.segment)

    def forward(self, text, image, proprio):
        return self.head(_image(image, self.skill_cfg.flow_res), self.text(text), proprio)
