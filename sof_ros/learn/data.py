"""Episodes -> training tensors at the working resolution.

Frames and flows of all episodes are concatenated once, with padding steps after every episode,
so a skill segment starting anywhere is a strided slice (no per-sample copies, little memory).

A segment starting at frame t holds `segment` flow fields `stride` frames apart: the flow from
t + j*stride to t + (j+1)*stride for j < segment (dataset key `flow/<estimator>_k<stride>`,
`sof-flow --gap stride`), so it spans segment * stride frames; the action chunk of t is the actions
at t, t+1, ... (one per control step).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from tqdm import tqdm

from sof_ros.config import SkillConfig
from sof_ros.data.dataset import Dataset, flow_key, validate_dataset
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



def span(cfg: SkillConfig) -> int:
    """Frames (control steps) a skill segment covers."""
    return cfg.segment * cfg.stride


def moving_threshold(cfg: SkillConfig, source_width: int) -> float:
    """`cfg.moving_px` source-image pixels in working-resolution pixels."""
    return cfg.moving_px * cfg.flow_res / source_width


def _load_cache(path) -> dict | None:
    """A SegmentData cache file's state, or None to rebuild it. weights_only: tensors and plain values
    only, so a cache file cannot run code (a dataset copied from elsewhere may bring its .cache along);
    a file it refuses (one written by an earlier version as a full pickle) is rebuilt, not trusted."""
    try:
        state = torch.load(path, weights_only=True, mmap=True)
        state["episodes"] = [EpisodeMeta(**e) for e in state["episodes"]]
        return state
    except Exception:  # noqa: BLE001 - pickle refused, damaged or foreign file: recompute
        return None


@dataclass
class EpisodeMeta:
    task: str
    instruction: str
    length: int  # frames
    in_d_act: bool  # its actions train the action stages (flagged in_d_act, with the proprioception they need)
    is_val: bool
    start: int  # offset of frame 0 in the concatenated arrays
    has_proprio: bool = True  # ee_pos + gripper recorded; RGB-only videos have none (zeros in `proprio`)
    camera: str = ""


class SegmentData:
    """All frames/flows/actions of a dataset, indexed by (episode, t).

    Stages 1-2 need only frames and flow, so RGB-only episodes (imported videos) are welcome; the
    action stages see only episodes flagged in_d_act that also carry proprioception when the heads
    use it (`proprio_required`). Every file is validated first: a short `ee_pos` or `actions` array
    stops training with the file and key instead of silently shifting later episodes."""

    def __init__(self, root: str, cfg: SkillConfig, flow_name: str = "dis", val_fraction: float = 0.1,
                 progress: bool = True, with_actions: bool = True, proprio_required: bool = True,
                 chunk: int = 0, cache: bool = False):
        ds = Dataset(root, validate=not cache)
        infos = ds.episodes()
        self.cfg = cfg
        cache_path = None
        if cache:  # the tensors below, saved once per dataset state and working resolution (sof-train --cache)
            key = repr((cfg.segment, cfg.stride, cfg.flow_res, cfg.image_res, flow_name, val_fraction, with_actions,
                        proprio_required, chunk, [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                                  for p in ds.episode_paths()]))
            import hashlib

            cache_path = ds.root / ".cache" / f"segments_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
            state = _load_cache(cache_path) if cache_path.is_file() else None
            if state is not None:
                self.__dict__.update(state)
                self.cfg = cfg
                return
            validate_dataset(ds.root)
        self.d_act_without_proprio: list[str] = []  # flagged in_d_act but unusable by the action heads
        self.span = span(cfg)
        self.chunk = max(int(chunk) or self.span, 1)
        pad = max(self.span, self.chunk) + 1  # padding frames after every episode
        groups: dict[tuple, list] = {}
        for info in infos:
            groups.setdefault((info.task, info.camera), []).append(info)
        val = set()
        for group in groups.values():  # hold out the last non-D_act episodes of every (task, camera)
            candidates = [i.index for i in group if not i.in_d_act]
            n_val = max(1, int(round(val_fraction * len(group)))) if len(candidates) > 1 and val_fraction > 0 else 0
            val.update(candidates[len(candidates) - n_val:])
        rgb, flow, act, prop, self.episodes = [], [], [], [], []
        start = 0
        self.flow_key = "flow/" + flow_key(flow_name, cfg.stride)
        for info in tqdm(infos, desc="load episodes", disable=not progress):
            keys = ("rgb", self.flow_key) + (("ee_pos", "gripper") if info.has_proprio else ())
            try:
                arr = ds.load(info.path, keys)
            except DatasetError as exc:
                raise DatasetError(f"{exc}; training needs flow (`sof-flow {root} --estimator {flow_name}"
                                   + (f" --gap {cfg.stride}" if cfg.stride > 1 else "") + "`)") from None
            t = arr["rgb"].shape[0]
            self.source_width = int(arr["rgb"].shape[2])  # image px per working px = source_width / flow_res
            rgb.append(resize_rgb(arr["rgb"], cfg.image_res))
            rgb.append(np.repeat(rgb[-1][-1:], pad, 0))
            f = resize_flow(arr[self.flow_key], cfg.flow_res).astype(np.float16)
            # fields t -> t+stride exist for t < T - stride; later starts (and the padding) see no motion
            flow.append(np.concatenate([f, np.zeros((t + pad - len(f),) + f.shape[1:], np.float16)]))
            p = (np.concatenate([arr["ee_pos"], arr["gripper"][:, None]], 1).astype(np.float32)
                 if info.has_proprio else np.zeros((t, 4), np.float32))
            prop.append(np.concatenate([p, np.repeat(p[-1:], pad, 0)]))
            a = np.zeros((t + pad, 4), np.float32)
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
                                             info.index in val, start, info.has_proprio, info.camera))
            start += t + pad
        self.pad = pad
        self.rgb = torch.from_numpy(np.concatenate(rgb))
        self.flow = torch.from_numpy(np.concatenate(flow))  # float16: the working-res flow of 100k+ frames
        self.actions = torch.from_numpy(np.concatenate(act))
        self.proprio = torch.from_numpy(np.concatenate(prop))
        self.instructions = sorted({e.instruction for e in self.episodes})
        self.tokens: torch.Tensor | None = None  # (N_frames_total, n_tokens) filled after stage 1
        self.pixel_tokens: torch.Tensor | None = None  # same, from the pixel-space skills ablation
        if cache_path is not None:
            cache_path.parent.mkdir(exist_ok=True)
            tmp = cache_path.with_suffix(".tmp")
            state = {k: v for k, v in self.__dict__.items() if k != "cfg"}
            state["episodes"] = [asdict(e) for e in self.episodes]
            torch.save(state, tmp)
            tmp.replace(cache_path)

    @property
    def moving_threshold(self) -> float:
        return moving_threshold(self.cfg, self.source_width)

    def d_act_episodes(self, per_task_camera: int | None) -> set[int]:
        """Indices (into self.episodes) of the action-labelled training episodes the action stages use:
        the first `per_task_camera` in_d_act episodes of every (task, camera)."""
        out, count = set(), {}
        for i, e in enumerate(self.episodes):
            if e.is_val or not e.in_d_act:
                continue
            key = (e.task, e.camera)
            count[key] = count.get(key, 0) + 1
            if per_task_camera is None or count[key] <= per_task_camera:
                out.add(i)
        return out

    def starts(self, split: str = "train", d_act_only: bool = False, d_act_per_task_camera: int | None = None,
               exclude: set[int] | None = None) -> np.ndarray:
        """Global frame offsets of every valid segment start (t < T-1) in a split; `d_act_only` keeps
        the D_act episodes (see d_act_episodes), `exclude` drops the given episode indices."""
        keep = self.d_act_episodes(d_act_per_task_camera) if d_act_only else None
        out = []
        for i, e in enumerate(self.episodes):
            if (split == "train") == e.is_val:
                continue
            if keep is not None and i not in keep:
                continue
            if exclude and i in exclude:
                continue
            out.append(np.arange(e.start, e.start + e.length - 1))
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def instruction_index(self) -> np.ndarray:
        idx = np.zeros(len(self.rgb), np.int64)
        for e in self.episodes:
            idx[e.start: e.start + e.length + self.pad] = self.instructions.index(e.instruction)
        return idx

    def segment(self, starts: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """The flow segment of every start, (B, H, r, r, 2) float32 (or strided rows of `source`)."""
        source = self.flow if source is None else source
        idx = starts[:, None] + self.cfg.stride * torch.arange(self.cfg.segment)[None]
        out = source[idx]
        return out.float() if out.dtype == torch.float16 else out

    def action_chunk(self, starts: torch.Tensor) -> torch.Tensor:
        """The actions of `chunk` consecutive control steps from every start, (B, chunk, 4)."""
        return self.actions[starts[:, None] + torch.arange(self.chunk)[None]]

    def future_changes(self, starts: torch.Tensor) -> torch.Tensor:
        """Pixel change of frames t+s, t+2s, .. t+H*s (s = stride) from frame t, (B, H, r, r, 3) in [-2, 2] at
        flow_res: what a pixel-space skill token summarises (the analogue of flow; adding frame t gives the
        future frames)."""
        steps = self.cfg.stride * torch.arange(self.cfg.segment + 1)[None]
        x = self.rgb[starts[:, None] + steps]  # (B, 1 + H, S, S, 3); the padding repeats the last frame
        b, n = x.shape[:2]
        x = image_to_tensor(x.reshape(b * n, *x.shape[2:]))
        if x.shape[-1] != self.cfg.flow_res:
            x = torch.nn.functional.interpolate(x, size=self.cfg.flow_res, mode="area")
        x = x.permute(0, 2, 3, 1).reshape(b, n, self.cfg.flow_res, self.cfg.flow_res, 3)
        return x[:, 1:] - x[:, :1]

    def flow_std(self, starts: np.ndarray, n: int = 4000, seed: int = 0) -> float:
        """Standard deviation of the flow components on moving pixels of (a sample of) the given frames:
        the scale Stage 1 normalises flow by when skill.flow_scale is 0."""
        rng = np.random.default_rng(seed)
        pick = torch.from_numpy(rng.choice(starts, size=min(n, len(starts)), replace=False))
        f = self.flow[pick].float()
        moving = f.norm(dim=-1) > self.moving_threshold
        return float(f[moving].std()) if moving.sum() > 100 else 1.0
