"""Episodes -> training tensors at the working resolution.

Frames and flows of all episodes are concatenated once, with H padding steps after every episode,
so a skill segment starting anywhere is a contiguous slice (no per-sample copies, little memory).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from tqdm import tqdm

from sof_ros.config import SkillConfig
from sof_ros.data.dataset import Dataset
from sof_ros.errors import DatasetError
from sof_ros.geometry import resize_flow
from sof_ros.nn import image_to_tensor


def resize_rgb(rgb: np.ndarray, res: int) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., res, res, 3)."""
    if rgb.shape[-3:-1] == (res, res):
        return rgb
    flat = rgb.reshape(-1, *rgb.shape[-3:])
    out = np.stack([cv2.resize(f, (res, res), interpolation=cv2.INTER_AREA) for f in flat])
    return out.reshape(*rgb.shape[:-3], res, res, 3)


@dataclass
class EpisodeMeta:
    task: str
    instruction: str
    length: int  # frames
    in_d_act: bool  # its actions train the action stages (flagged in_d_act, with the proprioception they need)
    is_val: bool
    start: int  # offset of frame 0 in the concatenated arrays
    has_proprio: bool = True  # ee_pos + gripper recorded; RGB-only videos have none (zeros in `proprio`)


class SegmentData:
    """All frames/flows/actions of a dataset, indexed by (episode, t).

    Stages 1-2 need only frames and flow, so RGB-only episodes (imported videos) are welcome; the
    action stages see only episodes flagged in_d_act that also carry proprioception when the heads
    use it (`proprio_required`). Every file is validated first: a short `ee_pos` or `actions` array
    stops training with the file and key instead of silently shifting later episodes."""

    def __init__(self, root: str, cfg: SkillConfig, flow_name: str = "dis", val_fraction: float = 0.1,
                 progress: bool = True, with_actions: bool = True, proprio_required: bool = True):
        ds = Dataset(root, validate=True)
        infos = ds.episodes()
        self.cfg = cfg
        self.d_act_without_proprio: list[str] = []  # flagged in_d_act but unusable by the action heads
        h = cfg.segment
        by_task: dict[str, list] = {}
        for info in infos:
            by_task.setdefault(info.task, []).append(info)
        val = set()
        for task_infos in by_task.values():  # hold out the last non-D_act episodes of every task
            candidates = [i.index for i in task_infos if not i.in_d_act]
            n_val = max(1, int(round(val_fraction * len(task_infos)))) if len(candidates) > 1 else 0
            val.update(candidates[len(candidates) - n_val:])
        rgb, flow, act, prop, self.episodes = [], [], [], [], []
        start = 0
        flow_key = f"flow/{flow_name}"
        for info in tqdm(infos, desc="load episodes", disable=not progress):
            keys = ("rgb", flow_key) + (("ee_pos", "gripper") if info.has_proprio else ())
            try:
                arr = ds.load(info.path, keys)
            except DatasetError as exc:
                raise DatasetError(f"{exc}; training needs flow (`sof-flow {root} --estimator {flow_name}`)") from None
            t = arr["rgb"].shape[0]
            self.source_width = int(arr["rgb"].shape[2])  # image px per working px = source_width / flow_res
            rgb.append(resize_rgb(arr["rgb"], cfg.image_res))
            rgb.append(np.repeat(rgb[-1][-1:], h, 0))
            f = resize_flow(arr[flow_key], cfg.flow_res)
            flow.append(np.concatenate([f, np.zeros((h + 1,) + f.shape[1:], np.float32)]))
            p = (np.concatenate([arr["ee_pos"], arr["gripper"][:, None]], 1).astype(np.float32)
                 if info.has_proprio else np.zeros((t, 4), np.float32))
            prop.append(np.concatenate([p, np.repeat(p[-1:], h, 0)]))
            a = np.zeros((t - 1 + h + 1, 4), np.float32)
            lacks_proprio = info.in_d_act and proprio_required and not info.has_proprio
            if lacks_proprio:
                self.d_act_without_proprio.append(info.path.name)
            acts_usable = with_actions and info.in_d_act and not lacks_proprio
            if acts_usable:
                acts = ds.load_actions(info.path)
                a[: t - 1] = acts
                a[t - 1:, 3] = acts[-1, 3]  # hold the gripper, stop moving
            act.append(a)
            self.episodes.append(EpisodeMeta(info.task, info.instruction, t, acts_usable,
                                             info.index in val, start, info.has_proprio))
            start += t + h
        self.rgb = torch.from_numpy(np.concatenate(rgb))
        self.flow = torch.from_numpy(np.concatenate(flow))
        self.actions = torch.from_numpy(np.concatenate(act))
        self.proprio = torch.from_numpy(np.concatenate(prop))
        self.instructions = sorted({e.instruction for e in self.episodes})
        self.tokens: torch.Tensor | None = None  # (N_frames_total, n_tokens) filled after stage 1
        self.pixel_tokens: torch.Tensor | None = None  # same, from the pixel-space skills ablation

    def starts(self, split: str = "train", d_act_only: bool = False, d_act_per_task: int | None = None) -> np.ndarray:
        """Global frame offsets of every valid segment start (t < T-1) in a split."""
        out, per_task = [], {}
        for e in self.episodes:
            if (split == "train") == e.is_val:
                continue
            if d_act_only:
                if not e.in_d_act:
                    continue
                per_task[e.task] = per_task.get(e.task, 0) + 1
                if d_act_per_task is not None and per_task[e.task] > d_act_per_task:
                    continue
            out.append(np.arange(e.start, e.start + e.length - 1))
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def instruction_index(self) -> np.ndarray:
        idx = np.zeros(len(self.rgb), np.int64)
        for e in self.episodes:
            idx[e.start: e.start + e.length + self.cfg.segment] = self.instructions.index(e.instruction)
        return idx

    def segment(self, starts: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        idx = starts[:, None] + torch.arange(self.cfg.segment)[None]
        return source[idx]

    def future_changes(self, starts: torch.Tensor) -> torch.Tensor:
        """Pixel change of frames t+1..t+H from frame t, (B, H, r, r, 3) in [-2, 2] at flow_res: what a
        pixel-space skill token summarises (the analogue of flow; adding frame t gives the future frames)."""
        frames = torch.cat([starts[:, None], starts[:, None] + 1 + torch.arange(self.cfg.segment)[None]], 1)
        x = self.rgb[frames]  # (B, 1 + H, S, S, 3); the padding after an episode repeats its last frame
        b, n = x.shape[:2]
        x = image_to_tensor(x.reshape(b * n, *x.shape[2:]))
        if x.shape[-1] != self.cfg.flow_res:
            x = torch.nn.functional.interpolate(x, size=self.cfg.flow_res, mode="area")
        x = x.permute(0, 2, 3, 1).reshape(b, n, self.cfg.flow_res, self.cfg.flow_res, 3)
        return x[:, 1:] - x[:, :1]
