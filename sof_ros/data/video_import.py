"""`sof-import-videos`: turn a folder of .mp4/.webm clips into an action-free dataset (D_video).

Each video becomes one episode with source="video", its frames resized to W x H (default 128x128,
centre-cropped to that aspect first so motion is not squashed; --stretch to resize only), and no
depth, segmentation or actions. Videos already imported into the same dataset (same file name)
are skipped, so the command can be re-run after adding clips.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from sof_ros.errors import SofError, run_cli

VIDEO_SUFFIXES = (".mp4", ".webm")


def find_videos(video_dir: str | Path) -> list[Path]:
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise SofError(f"video folder {video_dir} does not exist")
    videos = sorted(p for p in video_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise SofError(f"no {'/'.join(VIDEO_SUFFIXES)} videos in {video_dir}; put the clips directly in that folder")
    return videos


def load_instructions(path: str | Path) -> dict[str, dict]:
    """Mapping file -> {file name or stem: {"instruction": str, "task": str | None}}.

    JSON: {"clip.mp4": "open the door"} or {"clip.mp4": {"instruction": ..., "task": ...}}.
    CSV: rows `filename,instruction[,task]` (a header row naming `filename` is allowed).
    """
    path = Path(path)
    if not path.is_file():
        raise SofError(f"instructions file {path} does not exist")
    out: dict[str, dict] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SofError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise SofError(f"{path} must hold a JSON object mapping video file names to instructions")
        for name, value in data.items():
            if isinstance(value, str):
                value = {"instruction": value}
            if not isinstance(value, dict) or not isinstance(value.get("instruction"), str):
                raise SofError(f"{path}: entry '{name}' must be an instruction string or "
                               '{"instruction": ..., "task": ...}')
            out[str(name)] = {"instruction": value["instruction"], "task": value.get("task")}
    elif path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            for i, row in enumerate(csv.reader(f)):
                row = [c.strip() for c in row]
                if not row or not any(row) or (i == 0 and row[0].lower() in ("filename", "file", "video")):
                    continue
                if len(row) < 2 or not row[1]:
                    raise SofError(f"{path} line {i + 1}: expected `filename,instruction[,task]`, got {row}")
                out[row[0]] = {"instruction": row[1], "task": row[2] if len(row) > 2 and row[2] else None}
    else:
        raise SofError(f"instructions file {path} must be .json or .csv")
    return out


def crop_box(frame_wh: tuple[int, int], size: tuple[int, int], crop: bool) -> tuple[int, int, int, int]:
    """(x0, y0, width, height) of the centred window with the aspect of `size` (all of it if not `crop`)."""
    (fw, fh), (w, h) = frame_wh, size
    if not crop:
        return 0, 0, fw, fh
    if fw * h > fh * w:  # too wide
        cw = max(1, int(round(fh * w / h)))
        return (fw - cw) // 2, 0, cw, fh
    ch = max(1, int(round(fw * h / w)))
    return 0, (fh - ch) // 2, fw, ch


def resize_frame(frame: np.ndarray, size: tuple[int, int], crop: bool, nearest: bool = False) -> np.ndarray:
    """Centre-crop to the aspect of size = (W, H) (if `crop`), then resize; `nearest` for depth."""
    import cv2

    w, h = size
    x0, y0, cw, ch = crop_box((frame.shape[1], frame.shape[0]), size, crop)
    frame = frame[y0:y0 + ch, x0:x0 + cw]
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if frame.shape[0] > h else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(frame), (w, h), interpolation=interp)


def read_video(path: Path, size: tuple[int, int], stride: int = 1, crop: bool = True) -> tuple[np.ndarray, float]:
    """Frames (T, H, W, 3) uint8 of every `stride`-th frame, and the source fps (0 if unknown)."""
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(str(path), format="ffmpeg")
    except Exception as exc:  # noqa: BLE001 - ffmpeg raises many types for broken files
        raise SofError(f"cannot read video {path} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                       "check it plays, or re-encode it, e.g. `ffmpeg -i in.webm out.mp4`") from None
    frames = []
    try:
        fps = float(reader.get_meta_data().get("fps") or 0.0)
        for i, frame in enumerate(reader):
            if i % stride == 0:
                frame = np.asarray(frame)
                if frame.ndim == 2:
                    frame = np.repeat(frame[..., None], 3, -1)
                frames.append(resize_frame(frame[..., :3].astype(np.uint8), size, crop))
    except Exception as exc:  # noqa: BLE001
        raise SofError(f"cannot decode video {path} ({exc}); check it plays, or re-encode it") from None
    finally:
        reader.close()
    if len(frames) < 2:
        raise SofError(f"video {path} gives {len(frames)} frame(s) with --fps-stride {stride}; an episode "
                       "needs at least 2 (use a longer clip or a smaller stride)")
    return np.stack(frames), fps


def probe_video(path: Path) -> None:
    """Open a video and decode its first frame: catches broken files before anything is written."""
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(str(path), format="ffmpeg")
        try:
            reader.get_data(0)
        finally:
            reader.close()
    except Exception as exc:  # noqa: BLE001 - ffmpeg raises many types for broken files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SofError(f"cannot read video {path} ({msg}); check it plays, or re-encode it, "
                       "e.g. `ffmpeg -i in.webm out.mp4`; nothing was imported") from None


def checked_size(size: tuple[int, int], stride: int = 1) -> tuple[int, int]:
    """(W, H) of imported frames, or a SofError for a size or --fps-stride no importer can use."""
    w, h = (int(s) for s in size)
    if not (16 <= w <= 1920 and 16 <= h <= 1080):
        raise SofError(f"--size {w} {h} out of range; use 16..1920 x 16..1080")
    if stride < 1:
        raise SofError(f"--fps-stride must be at least 1, got {stride}")
    return w, h


def import_videos(video_dir: str | Path, out: str | Path, instruction: str | None = None,
                  instructions: str | Path | dict | None = None, size: tuple[int, int] = (128, 128),
                  stride: int = 1, crop: bool = True, progress: bool = True) -> list[Path]:
    """Import every video of `video_dir` into dataset `out`; returns the episode files written."""
    from tqdm import tqdm

    from sof_ros.data.dataset import Dataset

    if instruction and instructions:
        raise SofError("give either --instruction (one for all videos) or --instructions FILE, not both")
    if not instruction and not instructions:
        raise SofError("videos need an instruction: pass --instruction 'open the door' (all videos) or "
                       "--instructions FILE.json/.csv mapping file names to instructions")
    w, h = checked_size(size, stride)
    videos = find_videos(video_dir)
    mapping = instructions if isinstance(instructions, dict) else (load_instructions(instructions) if instructions else {})
    plan = []
    missing = []
    for video in videos:
        entry = mapping.get(video.name) or mapping.get(video.stem)
        if isinstance(entry, str):
            entry = {"instruction": entry}
        if instruction:
            entry = {"instruction": instruction}
        if not entry or not entry.get("instruction"):
            missing.append(video.name)
            continue
        plan.append((video, entry["instruction"], entry.get("task") or video.stem))
    if missing:
        raise SofError(f"no instruction for {len(missing)} video(s): {', '.join(missing[:10])}"
                       f"{' ...' if len(missing) > 10 else ''}; add them to the instructions file")
    done = imported_sources(out, "video_file")
    todo = [item for item in plan if item[0].name not in done]
    for video, _, _ in todo:
        probe_video(video)
    ds = Dataset.create(out)
    written = []
    index = ds.next_index()
    for video, text, task in tqdm(todo, desc="import", unit="video", disable=not progress):
        frames, fps = read_video(video, (w, h), stride, crop)
        attrs = dict(task=task, instruction=text, source="video", success=True, seed=-1, camera="video",
                     in_d_act=False, video_file=video.name, fps=fps / stride if fps else 0.0)
        written.append(ds.write_episode(index, attrs, {"rgb": frames}))
        index += 1
    return written


def imported_sources(out: str | Path, attr: str) -> set[str]:
    """Values of episode attribute `attr` (where each episode came from) already in dataset `out`,
    so an importer re-run after adding sources skips what it imported before."""
    import h5py

    from sof_ros.data.dataset import Dataset

    if not (Path(out) / "dataset.json").exists():
        return set()
    names = set()
    for path in Dataset(out).episode_paths():
        try:
            with h5py.File(path, "r") as f:
                if attr in f.attrs:
                    names.add(str(f.attrs[attr]))
        except OSError:
            continue  # a damaged episode is reported by the validator, not here
    return names


def add_frame_args(p, stride_help: str | None = None) -> None:
    """--size and --stretch (and --fps-stride when `stride_help`), shared by every importer."""
    p.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("W", "H"), help="frame size (128 128)")
    if stride_help:
        p.add_argument("--fps-stride", type=int, default=1, help=stride_help)
    p.add_argument("--stretch", action="store_true", help="resize without centre-cropping to the W:H aspect")


def report_import(written: list, out, what: str) -> None:
    print(f"imported {len(written)} {what} into {out}" + ("" if written else " (all were already imported)"))
    if written:
        print(f"next: sof-flow {out}")


def main(argv=None):
    def body():
        p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        p.add_argument("video_dir", help="folder holding .mp4 / .webm clips")
        p.add_argument("--out", required=True, help="dataset directory (created if missing, appended to if present)")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--instruction", help="one instruction for every video")
        g.add_argument("--instructions", help=".json or .csv mapping video file name -> instruction (and task)")
        add_frame_args(p, "keep every k-th frame")
        a = p.parse_args(argv)
        written = import_videos(a.video_dir, a.out, a.instruction, a.instructions, tuple(a.size), a.fps_stride,
                                crop=not a.stretch)
        report_import(written, a.out, "video(s)")

    run_cli(body)


if __name__ == "__main__":
    main()
