"""Small synthetic episodes for the data and training tests: a smooth texture that slides one way
per task, so flow is easy to estimate and a few steps of training see real motion."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from sof_ros.data.dataset import Dataset

SIZE = 32


def texture(seed: int, size: int = 3 * SIZE) -> np.ndarray:
    """A smooth random RGB texture (blurred noise) larger than a frame."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (size // 4, size // 4, 3)).astype(np.float32)
    return cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def sliding_frames(t: int, step: tuple[int, int] = (1, 0), seed: int = 0, size: int = SIZE) -> np.ndarray:
    """(t, size, size, 3) uint8 frames of a texture moving `step` = (dx, dy) pixels per frame."""
    tex = texture(seed, 3 * size)
    frames = [tex[size - k * step[1]: 2 * size - k * step[1], size - k * step[0]: 2 * size - k * step[0]]
              for k in range(t)]
    return np.stack(frames)


def write_mp4(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    """An H.264 clip of uint8 frames, as a phone or a LeRobot export would hold them."""
    import imageio.v2 as imageio

    with imageio.get_writer(str(path), fps=fps, codec="libx264", quality=8, macro_block_size=16) as w:
        for frame in frames:
            w.append_data(frame)


def write_episode(ds: Dataset, index: int, t: int = 10, *, proprio: bool = True, actions: bool = False,
                  flow: bool = True, instruction: str = "slide right", task: str = "slide", step=(1, 0),
                  proprio_len: int | None = None, actions_len: int | None = None) -> Path:
    """One episode; `proprio_len` / `actions_len` write deliberately wrong lengths."""
    rgb = sliding_frames(t, step, seed=index)
    arrays: dict[str, np.ndarray] = {"rgb": rgb}
    if flow:  # every pixel moves by `step` per frame (what sof-flow would estimate), at gaps 1 and 2
        for gap, key in ((1, "flow/dis"), (2, "flow/dis_k2")):  # config/tiny.yaml trains on stride 2
            arrays[key] = np.broadcast_to(gap * np.asarray(step, np.float16), (t - gap, SIZE, SIZE, 2)).copy()
    if proprio:
        n = t if proprio_len is None else proprio_len
        arrays["ee_pos"] = np.cumsum(np.full((n, 3), 0.01), 0)
        arrays["gripper"] = np.zeros(n, np.float32)
    acts = None
    if actions:
        acts = np.tile(np.array([[0.5, 0.0, 0.0, -1.0]], np.float32), ((t - 1) if actions_len is None else actions_len, 1))
    attrs = dict(task=task, instruction=instruction, source="metaworld" if proprio else "video", success=True,
                 seed=index, camera="test", in_d_act=actions)
    return ds.write_episode(index, attrs, arrays, acts)


def tiny_config(path: Path, dataset: Path, out: Path, steps: int = 2, **sections) -> Path:
    """config/tiny.yaml with a few training steps, pointed at `dataset` / `out`; returns the file."""
    cfg = yaml.safe_load(Path("config/tiny.yaml").read_text())
    cfg["train"].update(dataset=str(dataset), out=str(out), skill_steps=steps, policy_steps=steps, f2a_steps=steps,
                        baseline_steps=steps, log_every=1, ckpt_every=1000)
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path
