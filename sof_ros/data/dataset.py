"""The on-disk episode format: one chunked, compressed HDF5 file per episode.

    DATASET/
      dataset.json               {"format": "sof_ros.dataset", "version": 1}
      episodes/ep_000000.h5      frames and everything observable (the action-free video, D_video)
      actions/ep_000000.h5       actions only, a separate store (D_act reads it, D_video never does)

Episode file (T frames, H x W):
  attrs    format_version, task, instruction, source ("metaworld" | "video"), success, seed,
           camera, in_d_act (whether this episode belongs to the action-labelled subset)
  rgb      (T, H, W, 3) uint8                       required
  depth    (T, H, W) float32 metres                 optional (simulated / RGB-D episodes)
  seg      (T, H, W) int16 MuJoCo geom id, -1 none  optional
  intrinsics (3, 3), cam_pose (T, 4, 4) camera-to-world, OpenCV axes     optional
  ee_pos (T, 3), gripper (T,)                       optional (proprioception, never an action)
  sim/body_pos (T, nbody, 3), sim/body_mat (T, nbody, 3, 3), sim/geom_body (ngeom,)  optional, for GT flow
  flow/<estimator>  (T-1, H, W, 2) float16 pixels, flow from frame t to t+1, written by `sof-flow`
  flow/<estimator>_k<k>  (T-k, H, W, 2) the same over k frames (t -> t+k), `sof-flow --gap k`
Action file: actions (T-1, 4) float32 MetaWorld units (dx, dy, dz in [-1, 1], gripper), action t takes frame t to t+1.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sof_ros.errors import DatasetError

FORMAT_NAME = "sof_ros.dataset"
FORMAT_VERSION = 1
_GAP_SUFFIX = re.compile(r"_k(\d+)$")


INDEX_BLOCK = 100_000  # episode numbers per block: ep_<block * INDEX_BLOCK + k>.h5 (file names hold 6 digits)
INDEX_BLOCKS = 10 ** 6 // INDEX_BLOCK  # blocks 0..9: a seventh digit would sort out of order


def flow_key(estimator_key: str, gap: int = 1) -> str:
    """Name under `flow/` of an estimator's flow over `gap` frames: `dis` for consecutive frames,
    `dis_k2` for t -> t+2 (what `sof-flow --gap` writes and sof-train reads at skill.stride)."""
    return estimator_key if gap == 1 else f"{estimator_key}_k{gap}"


def flow_gap(name: str) -> int:
    """The gap in frames of a `flow/` entry named by `flow_key`."""
    m = _GAP_SUFFIX.search(name)
    return int(m.group(1)) if m else 1


REQUIRED_ATTRS = ("format_version", "task", "instruction", "source", "success")
_COMPRESS = dict(compression="gzip", compression_opts=4, shuffle=True)


def _chunked(h5: h5py.Group, name: str, data: np.ndarray) -> None:
    chunks = (1,) + data.shape[1:] if data.ndim >= 3 else True
    h5.create_dataset(name, data=data, chunks=chunks, **_COMPRESS)


@dataclass
class EpisodeInfo:
    index: int
    path: Path
    task: str
    instruction: str
    success: bool
    length: int
    in_d_act: bool
    source: str
    has_proprio: bool = False  # ee_pos and gripper recorded (robot / simulator episodes, not plain videos)
    camera: str = ""  # the camera it was recorded from ("" when unknown)


class Dataset:
    """A dataset directory; create with `Dataset.create`, open existing ones with `Dataset(path)`."""

    def __init__(self, root: str | Path, validate: bool = False):
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise DatasetError(
                f"{self.root} is not a sof_ros dataset (no dataset.json); create one with "
                f"`sof-collect --out {self.root}` or `sof-import-videos`"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{meta_path} is not valid JSON ({exc}); the dataset is damaged") from None
        if meta.get("format") != FORMAT_NAME:
            raise DatasetError(f"{meta_path}: format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
        if meta.get("version") != FORMAT_VERSION:
            raise DatasetError(
                f"{meta_path}: dataset version {meta.get('version')!r} is not supported by this "
                f"sof_ros (reads version {FORMAT_VERSION}); re-collect or convert the dataset"
            )
        self.meta = meta
        if validate:
            validate_dataset(self.root)

    @classmethod
    def create(cls, root: str | Path, exist_ok: bool = True) -> "Dataset":
        root = Path(root)
        meta_path = root / "dataset.json"
        if meta_path.exists():
            if not exist_ok:
                raise DatasetError(f"{root} already holds a dataset; choose another --out or delete it")
            return cls(root)
        (root / "episodes").mkdir(parents=True, exist_ok=True)
        (root / "actions").mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION}, indent=2))
        return cls(root)

    # --- listing -----------------------------------------------------------------------
    def episode_paths(self) -> list[Path]:
        return sorted((self.root / "episodes").glob("ep_*.h5"))

    def action_path(self, episode_path: Path) -> Path:
        return self.root / "actions" / episode_path.name

    def episodes(self) -> list[EpisodeInfo]:
        infos = []
        for path in self.episode_paths():
            with _open(path) as f:
                a = f.attrs
                infos.append(EpisodeInfo(
                    index=int(path.stem.split("_")[1]), path=path, task=str(a["task"]),
                    instruction=str(a["instruction"]), success=bool(a["success"]),
                    length=int(f["rgb"].shape[0]), in_d_act=bool(a.get("in_d_act", False)),
                    source=str(a["source"]), has_proprio="ee_pos" in f and "gripper" in f,
                    camera=str(a.get("camera", "")),
                ))
        return infos

    def next_index(self, block: int | None = None) -> int:
        """The number for the next episode; within `block` (episodes block * INDEX_BLOCK onwards), so
        processes that each own a block (`sof-collect --camera-index` or `--block`) can write one
        dataset at once."""
        if block is not None and not 0 <= int(block) < INDEX_BLOCKS:
            raise DatasetError(f"episode block {block} is outside 0..{INDEX_BLOCKS - 1} (episode numbers hold 6 "
                               f"digits); sof-collect --camera-index and --block take 0 to {INDEX_BLOCKS - 1}")
        lo = 0 if block is None else int(block) * INDEX_BLOCK
        hi = None if block is None else lo + INDEX_BLOCK
        taken = [int(p.stem.split("_")[1]) for p in self.episode_paths()]
        taken = [i for i in taken if i >= lo and (hi is None or i < hi)]
        nxt = max(taken) + 1 if taken else lo
        if hi is not None and nxt >= hi:
            raise DatasetError(f"{self.root}: block {block} holds {INDEX_BLOCK} episodes already; collect into "
                               "another --out")
        return nxt

    # --- writing -----------------------------------------------------------------------
    def write_episode(self, index: int, attrs: dict, arrays: dict[str, np.ndarray],
                      actions: np.ndarray | None = None) -> Path:
        """Write atomically (temp file then rename) so an interrupted run leaves no half episode."""
        path = self.root / "episodes" / f"ep_{index:06d}.h5"
        tmp = path.with_suffix(".h5.tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["format_version"] = FORMAT_VERSION
            for key, value in attrs.items():
                f.attrs[key] = value
            for name, data in arrays.items():
                data = np.asarray(data)
                if name in ("rgb", "depth", "seg", "sim/body_pos", "sim/body_mat"):
                    _chunked(f, name, data)
                else:
                    f.create_dataset(name, data=data)
        tmp.replace(path)
        if actions is not None:
            apath = self.action_path(path)
            atmp = apath.with_suffix(".h5.tmp")
            with h5py.File(atmp, "w") as f:
                f.attrs["format_version"] = FORMAT_VERSION
                f.create_dataset("actions", data=np.asarray(actions, dtype=np.float32))
            atmp.replace(apath)
        return path

    # --- reading -----------------------------------------------------------------------
    def load(self, path: Path, keys: tuple[str, ...] = ("rgb",)) -> dict[str, np.ndarray]:
        with _open(path) as f:
            out = {}
            for key in keys:
                if key not in f:
                    raise DatasetError(f"{path.name} has no '{key}'"
                                       + ("; run `sof-flow` on the dataset first" if key.startswith("flow/") else ""))
                out[key] = f[key][()]
            return out

    def load_actions(self, path: Path) -> np.ndarray:
        apath = self.action_path(path)
        if not apath.is_file():
            raise DatasetError(f"episode {path.name} has no actions ({apath} missing); it can only "
                               "serve as an action-free video")
        with _open(apath) as f:
            return f["actions"][()]


def _open(path: Path, mode: str = "r") -> h5py.File:
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        raise DatasetError(f"cannot open {path} as HDF5 ({exc}); the file is damaged or not an episode") from None


def validate_episode(path: Path, action_path: Path | None = None) -> None:
    """Raise DatasetError naming the first problem found in one episode."""
    with _open(path) as f:
        missing = [a for a in REQUIRED_ATTRS if a not in f.attrs]
        if missing:
            raise DatasetError(f"{path}: missing attributes {missing}")
        if int(f.attrs["format_version"]) != FORMAT_VERSION:
            raise DatasetError(f"{path}: format_version {f.attrs['format_version']} != {FORMAT_VERSION}")
        if "rgb" not in f:
            raise DatasetError(f"{path}: no 'rgb' frames")
        rgb = f["rgb"]
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise DatasetError(f"{path}: 'rgb' must be (T, H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        t, h, w = rgb.shape[:3]
        if t < 2:
            raise DatasetError(f"{path}: an episode needs at least 2 frames, has {t}")
        expected = {"depth": (t, h, w), "seg": (t, h, w), "intrinsics": (3, 3), "cam_pose": (t, 4, 4),
                    "ee_pos": (t, 3), "gripper": (t,)}
        for name, shape in expected.items():
            if name in f and f[name].shape != shape:
                raise DatasetError(f"{path}: '{name}' has shape {f[name].shape}, expected {shape} "
                                   f"(one per frame of 'rgb'); re-collect or re-import this episode, or delete it")
        if ("ee_pos" in f) != ("gripper" in f):
            have, lack = ("ee_pos", "gripper") if "ee_pos" in f else ("gripper", "ee_pos")
            raise DatasetError(f"{path}: has '{have}' but no '{lack}'; proprioception needs both "
                               "(or neither, for an RGB-only video)")
        for name in ("ee_pos", "gripper", "intrinsics", "cam_pose"):
            if name in f and not np.all(np.isfinite(f[name][()])):
                raise DatasetError(f"{path}: '{name}' contains NaN/inf; re-collect or re-import this episode")
        if "depth" in f:
            depth = f["depth"][()]
            if not np.all(np.isfinite(depth)) or depth.min() < 0:
                raise DatasetError(f"{path}: 'depth' has NaN/inf or negative values")
        if "flow" in f:
            for name, ds in f["flow"].items():
                n = t - flow_gap(name)  # flow over k frames (sof-flow --gap k): T-k fields
                if ds.shape != (n, h, w, 2):
                    raise DatasetError(f"{path}: 'flow/{name}' has shape {ds.shape}, expected {(n, h, w, 2)}")
    if action_path is not None and action_path.exists():
        with _open(action_path) as f:
            if "actions" not in f:
                raise DatasetError(f"{action_path}: no 'actions' dataset")
            acts = f["actions"]
            if acts.shape != (t - 1, 4):
                raise DatasetError(f"{action_path}: 'actions' has shape {acts.shape}, expected {(t - 1, 4)} "
                                   f"(one per step between the {t} frames of {path.name}); re-import or delete it")
            if not np.all(np.isfinite(acts[()])):
                raise DatasetError(f"{action_path}: 'actions' contains NaN/inf")


def validate_dataset(root: str | Path) -> int:
    """Validate every episode; returns the number of episodes."""
    ds = Dataset(root)
    paths = ds.episode_paths()
    if not paths:
        raise DatasetError(f"{root} holds no episodes (episodes/ep_*.h5); collect or import some first")
    for path in paths:
        validate_episode(path, ds.action_path(path))
    return len(paths)
