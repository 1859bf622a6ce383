"""`sof-import-lerobot`: a local LeRobot v2.x dataset folder -> sof_ros episodes (nothing is downloaded).

    DIR/meta/info.json                     fps, chunks_size, data_path / video_path templates, features
    DIR/meta/episodes.jsonl                {"episode_index", "tasks", "length"} per line (if missing:
                                           the episodes are the data/chunk-*/episode_*.parquet files)
    DIR/meta/tasks.jsonl                   {"task_index", "task"} per line
    DIR/data/chunk-000/episode_000000.parquet      one row per frame (read with pyarrow)
    DIR/videos/chunk-000/<camera>/episode_000000.mp4

What becomes what: the camera's video -> rgb (resized like sof-import-videos); the task string ->
instruction (and task). Everything else is left out unless the user says what it means, because a
wrong guess would train silently wrong heads:
  --state-ee-pos I J K --state-gripper G   observation.state columns -> ee_pos (metres) and gripper
  --action-ee-delta DX DY DZ GRIP          action columns that are end-effector displacements per
                                           frame (--action-metres: metres per unit) and a gripper
                                           command in [-1 open, +1 close]; the episodes join D_act
                                           with actions in the arm's action units (--robot profile).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sof_ros.data.units import add_action_unit_args, robot_units
from sof_ros.data.video_import import (
    add_frame_args, checked_size, imported_sources, probe_video, read_video, report_import)
from sof_ros.errors import SofError, run_cli

SUPPORTED_VERSIONS = ("v2.0", "v2.1")
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SofError(f"{path} line {i + 1} is not valid JSON ({exc}); the dataset is damaged") from None
    return rows


class LeRobotFolder:
    """The metadata of a local LeRobot v2.x dataset and where each episode's files are."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise SofError(f"{self.root} is not a LeRobot dataset (no meta/info.json); pass the folder that "
                           "holds meta/, data/ and videos/")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as exc:
            raise SofError(f"{info_path} is not valid JSON ({exc}); the dataset is damaged") from None
        version = str(self.info.get("codebase_version", "?"))
        if version not in SUPPORTED_VERSIONS:
            raise SofError(f"{info_path}: LeRobot codebase_version {version} is not supported; this importer "
                           f"reads {' / '.join(SUPPORTED_VERSIONS)} (one parquet and one video per episode)")
        self.features: dict = self.info.get("features", {})
        self.fps = float(self.info.get("fps") or 0.0)
        self.chunks_size = int(self.info.get("chunks_size") or 1000)
        self.tasks = self._tasks()
        self.episodes = self._episodes()

    def _tasks(self) -> dict[int, str]:
        path = self.root / "meta" / "tasks.jsonl"
        if not path.is_file():
            return {}
        return {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(path) if "task_index" in r and "task" in r}

    def _episodes(self) -> dict[int, dict]:
        path = self.root / "meta" / "episodes.jsonl"
        if path.is_file():
            return {int(r["episode_index"]): r for r in _read_jsonl(path) if "episode_index" in r}
        files = sorted((self.root / "data").glob("chunk-*/episode_*.parquet"))
        if not files:
            raise SofError(f"{self.root} lists no episodes (no meta/episodes.jsonl, no data/chunk-*/episode_*.parquet)")
        return {int(f.stem.split("_")[1]): {"episode_index": int(f.stem.split("_")[1])} for f in files}

    def cameras(self) -> list[str]:
        return [k for k, v in self.features.items() if isinstance(v, dict) and v.get("dtype") == "video"]

    def camera(self, key: str | None) -> str:
        cams = self.cameras()
        if key is None:
            if len(cams) == 1:
                return cams[0]
            raise SofError(f"{self.root} has {len(cams)} video cameras ({', '.join(cams) or 'none'}); "
                           "choose one with --camera KEY" if cams else
                           f"{self.root} has no video features (dtype 'video' in meta/info.json); "
                           "datasets with images stored in the parquet files are not supported")
        if key not in cams:
            raise SofError(f"--camera {key} is not a video feature of {self.root}; choose one of: {', '.join(cams)}")
        return key

    def _path(self, template_key: str, default: str, index: int, **extra) -> Path:
        template = self.info.get(template_key) or default
        return self.root / template.format(episode_chunk=index // self.chunks_size, episode_index=index, **extra)

    def data_path(self, index: int) -> Path:
        return self._path("data_path", DATA_PATH, index)

    def video_path(self, index: int, camera: str) -> Path:
        return self._path("video_path", VIDEO_PATH, index, video_key=camera)

    def instruction(self, index: int, task_indices: np.ndarray | None) -> str:
        """The episode's task string: from its rows' task_index, else meta/episodes.jsonl."""
        if task_indices is not None and len(task_indices) and int(task_indices[0]) in self.tasks:
            return self.tasks[int(task_indices[0])]
        listed = self.episodes.get(index, {}).get("tasks") or []
        if listed:
            return str(listed[0])
        raise SofError(f"episode {index} of {self.root} has no task string (meta/tasks.jsonl / meta/episodes.jsonl); "
                       "the instruction comes from it")


def read_columns(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The named columns of one episode's parquet file as float arrays (T, D) / (T,)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SofError("reading LeRobot datasets needs pyarrow; install the project with scripts/install.sh") from None
    if not path.is_file():
        raise SofError(f"{path} is missing; the LeRobot dataset is incomplete")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError ...
        raise SofError(f"cannot read {path} as parquet ({str(exc).splitlines()[0]}); the file is damaged") from None
    out = {}
    for name in names:
        if name not in table.column_names:
            raise SofError(f"{path} has no column '{name}' (it has: {', '.join(table.column_names)})")
        values = table.column(name).to_pylist()
        try:
            out[name] = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise SofError(f"{path}: column '{name}' is not numeric rows of one length") from None
    return out


def _columns(arr: np.ndarray, indices: list[int], flag: str, path: Path, column: str) -> np.ndarray:
    arr = arr.reshape(len(arr), -1)
    bad = [i for i in indices if not 0 <= i < arr.shape[1]]
    if bad:
        raise SofError(f"{flag} {' '.join(map(str, indices))}: {path} '{column}' has {arr.shape[1]} columns "
                       f"(0..{arr.shape[1] - 1}), so {bad} is out of range")
    out = arr[:, indices]
    if not np.all(np.isfinite(out)):
        raise SofError(f"{path}: '{column}' columns {indices} contain NaN/inf")
    return out


def episode_arrays(folder: LeRobotFolder, index: int, camera: str, size: tuple[int, int], stride: int, crop: bool,
                   state_ee_pos: list[int] | None, state_gripper: int | None, action_ee_delta: list[int] | None,
                   units_per_metre: float) -> tuple[dict, np.ndarray | None, str]:
    """(arrays, actions or None, instruction) of one LeRobot episode, every `stride`-th frame."""

    data_path, video_path = folder.data_path(index), folder.video_path(index, camera)
    wanted = (["observation.state"] if state_ee_pos else []) + (["action"] if action_ee_delta else [])
    has_task = "task_index" in folder.features
    cols = read_columns(data_path, wanted + (["task_index"] if has_task else []))
    frames, _ = read_video(video_path, size, 1, crop)
    n_rows = len(next(iter(cols.values()))) if cols else len(frames)
    if len(frames) != n_rows:
        raise SofError(f"{video_path} has {len(frames)} frames but {data_path} has {n_rows} rows; "
                       "re-encode the video or re-export the episode")
    keep = np.arange(0, len(frames), stride)
    if len(keep) < 2:
        raise SofError(f"episode {index} gives {len(keep)} frame(s) with --fps-stride {stride}; an episode needs 2")
    arrays = {"rgb": frames[keep]}
    if state_ee_pos:
        state = cols["observation.state"]
        arrays["ee_pos"] = _columns(state, state_ee_pos, "--state-ee-pos", data_path, "observation.state")[keep]
        arrays["gripper"] = _columns(state, [state_gripper], "--state-gripper", data_path,
                                     "observation.state")[keep, 0].astype(np.float32)
    actions = None
    if action_ee_delta:
        act = _columns(cols["action"], action_ee_delta, "--action-ee-delta", data_path, "action")
        # action j takes frame j to j+1: a step of `stride` frames moves by the sum of its deltas
        moves = np.add.reduceat(act[: keep[-1], :3], keep[:-1], axis=0) * units_per_metre
        grip = act[keep[1:] - 1, 3]
        if np.any(np.abs(grip) > 1.0 + 1e-6):
            raise SofError(f"{data_path}: action column {action_ee_delta[3]} (gripper) has values outside "
                           "[-1 open, +1 close]; map the gripper to that range before importing")
        actions = np.concatenate([moves, grip[:, None]], 1).astype(np.float32)
    instruction = folder.instruction(index, cols.get("task_index"))
    return arrays, actions, instruction


def import_lerobot(root: str | Path, out: str | Path, camera: str | None = None, size: tuple[int, int] = (128, 128),
                   stride: int = 1, crop: bool = True, state_ee_pos: list[int] | None = None,
                   state_gripper: int | None = None, action_ee_delta: list[int] | None = None,
                   action_metres: float = 1.0, metres_per_action_unit: float = 0.01,
                   progress: bool = True) -> list[Path]:
    """Import every episode of a local LeRobot v2.x dataset into `out`; returns the episode files written."""
    from tqdm import tqdm

    from sof_ros.data.dataset import Dataset

    size = checked_size(size, stride)
    if (state_ee_pos is None) != (state_gripper is None):
        raise SofError("give --state-ee-pos I J K and --state-gripper G together (proprioception needs both)")
    if state_ee_pos is not None and len(state_ee_pos) != 3:
        raise SofError(f"--state-ee-pos needs 3 column indices (x y z), got {state_ee_pos}")
    if action_ee_delta is not None and len(action_ee_delta) != 4:
        raise SofError(f"--action-ee-delta needs 4 column indices (dx dy dz gripper), got {action_ee_delta}")
    if action_metres <= 0 or metres_per_action_unit <= 0:
        raise SofError("--action-metres and --metres-per-action-unit must be > 0")
    folder = LeRobotFolder(root)
    cam = folder.camera(camera)
    source = f"{Path(root).resolve().name}:{cam}"
    done = imported_sources(out, "lerobot_episode")
    todo = [i for i in sorted(folder.episodes) if f"{source}:{i}" not in done]
    for i in todo:
        probe_video(folder.video_path(i, cam))
    ds = Dataset.create(out)
    written, index = [], ds.next_index()
    for i in tqdm(todo, desc="import", unit="episode", disable=not progress):
        arrays, actions, instruction = episode_arrays(folder, i, cam, size, stride, crop, state_ee_pos, state_gripper,
                                                      action_ee_delta, action_metres / metres_per_action_unit)
        clipped = 0
        if actions is not None:
            clipped = int(np.sum(np.abs(actions[:, :3]) > 1.0))
            actions[:, :3] = np.clip(actions[:, :3], -1.0, 1.0)
            if clipped:
                print(f"warning: episode {i}: {clipped} action value(s) beyond +-1 unit ({metres_per_action_unit} m "
                      "per step) clipped; check --action-metres / --metres-per-action-unit / --fps-stride")
        attrs = dict(task=instruction, instruction=instruction, source="lerobot", success=True, seed=-1, camera=cam,
                     in_d_act=actions is not None, lerobot_episode=f"{source}:{i}",
                     fps=folder.fps / stride if folder.fps else 0.0, actions_clipped=clipped)
        written.append(ds.write_episode(index, attrs, arrays, actions))
        index += 1
    return written


def main(argv=None):
    def body():
        p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("lerobot_dir", help="local LeRobot v2.x dataset folder (meta/, data/, videos/)")
        p.add_argument("--out", required=True, help="dataset directory (created if missing, appended to if present)")
        p.add_argument("--camera", help="video feature key, e.g. observation.images.top (needed when there are several)")
        add_frame_args(p, "keep every k-th frame (bring fps to the arm's control rate)")
        p.add_argument("--state-ee-pos", type=int, nargs=3, metavar=("X", "Y", "Z"),
                       help="observation.state columns holding the end-effector position in metres")
        p.add_argument("--state-gripper", type=int, metavar="G", help="observation.state column holding the gripper opening")
        p.add_argument("--action-ee-delta", type=int, nargs=4, metavar=("DX", "DY", "DZ", "GRIP"),
                       help="action columns that ARE end-effector displacements per frame in the arm's base frame "
                            "and a gripper command in [-1, 1]: the episodes become action-labelled (D_act)")
        p.add_argument("--action-metres", type=float, default=1.0,
                       help="metres of end-effector motion per unit of the DX DY DZ columns (1.0: they are metres)")
        add_action_unit_args(p)
        a = p.parse_args(argv)
        written = import_lerobot(a.lerobot_dir, a.out, a.camera, tuple(a.size), a.fps_stride, not a.stretch,
                                 a.state_ee_pos, a.state_gripper, a.action_ee_delta, a.action_metres, robot_units(a)[0])
        report_import(written, a.out, "episode(s)")

    run_cli(body)


if __name__ == "__main__":
    main()
