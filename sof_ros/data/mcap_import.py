"""`sof-import-mcap`: robot recordings (MCAP files from sof-recorder-node / `sof-bringup --record`)
-> action-labelled episodes (D_act) for that arm, one episode per file.

    frames      the camera topic's images, each at its header stamp (resized like sof-import-videos)
    ee_pos      the end-effector PoseStamped position (robot base frame), interpolated to each
                frame's stamp
    gripper     the gripper state last received before each frame: a std_msgs/Float64 (the sim
                bridge's), or a sensor_msgs/JointState (a real arm's /joint_states) read as the
                nodes read it, the --robot profile's finger joints' opening in [0, 1] (messages
                without them are skipped); 0 with --gripper-state-topic '' (what the nodes feed the
                agent when they have none)
    actions     step t: (ee_pos[t+1] - ee_pos[t]) / metres_per_action_unit, the motion the arm really
                made in that control step in the arm's action units (clipped to [-1, 1]), and the last
                gripper command received before frame t+1 (-1 open before the first)
    depth, intrinsics, cam_pose   when the recording has them (depth 0 where the camera had none)
    instruction --instruction, or the one recorded on the instruction topic

Frames before the first / after the last end-effector pose (or gripper state) are left out; a gap
in the middle is an error. Messages are decoded with mcap-ros2-support: no ROS installation needed.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sof_ros.data.units import add_action_unit_args, robot_units
from sof_ros.data.video_import import (
    add_frame_args, checked_size, crop_box, imported_sources, report_import, resize_frame)
from sof_ros.errors import SofError, run_cli
from sof_ros.ros.params import Topics


@dataclass
class RecordingTopics:
    image: str = Topics.IMAGE
    ee_pose: str = Topics.SIM_EE_POSE
    gripper_state: str = Topics.SIM_GRIPPER_STATE  # '' = none: gripper proprioception 0
    gripper_command: str = Topics.GRIPPER
    depth: str = Topics.DEPTH  # optional in the recording
    camera_info: str = Topics.CAMERA_INFO  # optional
    camera_pose: str = Topics.CAMERA_POSE  # optional
    instruction: str = Topics.INSTRUCTION  # optional with --instruction


@dataclass
class _Recording:
    """What one pass over the file collected, frames already resized."""

    frames: list = field(default_factory=list)  # (stamp_ns, log_ns, rgb)
    depth: dict = field(default_factory=dict)  # stamp_ns -> depth
    poses: list = field(default_factory=list)  # (stamp_ns, xyz)
    gripper_states: list = field(default_factory=list)  # (log_ns, value)
    gripper_commands: list = field(default_factory=list)  # (log_ns, value)
    instructions: list = field(default_factory=list)
    K: np.ndarray | None = None
    cam_pose: np.ndarray | None = None
    frame_id: str = ""
    raw_wh: tuple[int, int] | None = None  # (W, H) of the recorded frames, before resizing
    finger_joints: tuple = ()  # JointState gripper states: the finger joints (robot.gripper_joint_names) ...
    max_opening: float = 1.0  # ... and the sum of their positions when fully open (robot.gripper_max_opening)
    gripper_skipped: str = ""  # why the last gripper-state message was not usable


def recorded_topics(path: Path) -> set[str]:
    from mcap.reader import make_reader

    try:
        with open(path, "rb") as f:
            summary = make_reader(f).get_summary()
    except Exception as exc:  # noqa: BLE001 - mcap raises several types for damaged files
        raise SofError(f"cannot read {path} as MCAP ({_first_line(exc)}); copy it again, or re-record "
                       "(a recorder killed mid-write leaves the file unfinished)") from None
    if summary is None:
        raise SofError(f"{path} has no MCAP summary (the recorder did not finish it); re-record, or run "
                       "`mcap recover` on it")
    return {c.topic for c in summary.channels.values()}


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def crop_intrinsics(K: np.ndarray, frame_wh: tuple[int, int], size: tuple[int, int], crop: bool) -> np.ndarray:
    """Camera matrix of frames cropped and resized by video_import.resize_frame."""

    x0, y0, cw, ch = crop_box(frame_wh, size, crop)
    sx, sy = size[0] / cw, size[1] / ch
    out = np.array(K, dtype=np.float64)
    out[0, 0], out[1, 1] = K[0, 0] * sx, K[1, 1] * sy
    out[0, 2] = (K[0, 2] - x0 + 0.5) * sx - 0.5  # pixel centres, as cv2.resize maps them
    out[1, 2] = (K[1, 2] - y0 + 0.5) * sy - 0.5
    return out


def read_recording(path: Path, topics: RecordingTopics, size: tuple[int, int], crop: bool,
                   finger_joints: tuple = (), max_opening: float = 1.0) -> _Recording:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    present = recorded_topics(path)
    required = {"--image-topic": topics.image, "--ee-pose-topic": topics.ee_pose}
    if topics.gripper_state:
        required["--gripper-state-topic"] = topics.gripper_state
    for flag, topic in required.items():
        if topic not in present:
            hint = (" (add it to the recorder's topics, or pass --gripper-state-topic '' when the nodes run "
                    "without one: gripper proprioception is then 0, as they feed it)") if flag == "--gripper-state-topic" else ""
            raise SofError(f"{path} has no {topic} topic{hint}; recorded topics: {', '.join(sorted(present))}; "
                           f"name the right one with {flag}")
    rec = _Recording(finger_joints=tuple(finger_joints), max_opening=float(max_opening))
    wanted = [t for t in vars(topics).values() if t and t in present]
    with open(path, "rb") as f:
        messages = make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(
            topics=wanted, log_time_order=True)
        try:
            for _, channel, message, msg in messages:
                _collect(rec, topics, channel.topic, msg, int(message.log_time), size, crop)
        except (SofError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - ConversionError, truncated chunks, unknown schemas ...
            raise SofError(f"cannot use {path} ({type(exc).__name__}: {_first_line(exc)}); is it a complete "
                           "recording with the topics' usual message types?") from None
    if topics.gripper_state and not rec.gripper_states and rec.gripper_skipped:
        raise SofError(f"{path}: no usable gripper state on {topics.gripper_state} ({rec.gripper_skipped}); pass the "
                       "--robot whose finger joints these are, or --gripper-state-topic '' if the nodes ran without one")
    if topics.gripper_state and not rec.gripper_states:
        raise SofError(f"{path} has a {topics.gripper_state} topic but no message on it; pass --gripper-state-topic '' "
                       "if the nodes ran without a gripper state")
    if rec.K is not None and rec.raw_wh is not None:
        rec.K = crop_intrinsics(rec.K, rec.raw_wh, size, crop)
    return rec


def _collect(rec: _Recording, topics: RecordingTopics, topic: str, msg, log_ns: int, size, crop: bool) -> None:
    """Keep what one decoded message contributes to the episode (frames resized at once: little memory)."""
    from sof_ros.ros import conversions as cv

    if topic == topics.image:
        rgb = cv.msg_to_rgb(msg)
        rec.raw_wh = (rgb.shape[1], rgb.shape[0])
        rec.frame_id = rec.frame_id or str(msg.header.frame_id)
        rec.frames.append((cv.stamp_to_ns(msg.header.stamp), log_ns, resize_frame(rgb, size, crop)))
    elif topic == topics.depth:
        depth = np.nan_to_num(cv.msg_to_depth(msg), nan=0.0, posinf=0.0, neginf=0.0)
        rec.depth[cv.stamp_to_ns(msg.header.stamp)] = resize_frame(depth, size, crop, nearest=True)
    elif topic == topics.ee_pose:
        rec.poses.append((cv.stamp_to_ns(msg.header.stamp), cv.pose_msg_to_matrix(msg.pose)[:3, 3]))
    elif topic == topics.gripper_state:
        if hasattr(msg, "position"):  # sensor_msgs/JointState: the finger opening, as the nodes read it
            opening = cv.gripper_opening(msg, list(rec.finger_joints), rec.max_opening)
            if opening is None or isinstance(opening, str):
                rec.gripper_skipped = opening or "non-finite finger joint positions"
                return
            rec.gripper_states.append((log_ns, opening))
        else:
            rec.gripper_states.append((log_ns, float(msg.data)))
    elif topic == topics.gripper_command:
        rec.gripper_commands.append((log_ns, float(msg.data)))
    elif topic == topics.camera_info and rec.K is None:
        rec.K = cv.camera_info_to_K(msg)
    elif topic == topics.camera_pose:
        rec.cam_pose = cv.pose_msg_to_matrix(msg.pose)
    elif topic == topics.instruction:
        rec.instructions.append(str(msg.data))


def _last_before(events: list, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value of the last (time, value) event at or before each time, and whether there was one."""
    if not events:
        return np.zeros(len(times)), np.zeros(len(times), bool)
    t = np.array([e[0] for e in events])
    v = np.array([e[1] for e in events], dtype=np.float64)
    order = np.argsort(t, kind="stable")
    idx = np.searchsorted(t[order], times, side="right") - 1
    return v[order][np.maximum(idx, 0)], idx >= 0


def episode_from_recording(path: Path, rec: _Recording, metres_per_unit: float, max_pose_gap_s: float
                           ) -> tuple[dict, np.ndarray, dict]:
    """(arrays, actions, {"actions_clipped", "fps"}) of the usable span of a recording."""
    if len(rec.frames) < 2:
        raise SofError(f"{path} holds {len(rec.frames)} camera frame(s); an episode needs at least 2")
    rec.frames.sort(key=lambda f: f[0])
    stamps = np.array([f[0] for f in rec.frames])
    logs = np.array([f[1] for f in rec.frames])
    if len(rec.poses) < 2:
        raise SofError(f"{path} holds {len(rec.poses)} end-effector pose(s); it needs poses throughout the episode")
    rec.poses.sort(key=lambda p: p[0])
    pt = np.array([p[0] for p in rec.poses])
    pos = np.array([p[1] for p in rec.poses])
    after = np.clip(np.searchsorted(pt, stamps, side="left"), 1, len(pt) - 1)
    gap = (pt[after] - pt[after - 1]) / 1e9
    usable = (stamps >= pt[0]) & (stamps <= pt[-1])
    gripper, have_gripper = _last_before(rec.gripper_states, logs)
    if rec.gripper_states:
        usable &= have_gripper
    first, last = (int(np.flatnonzero(usable)[0]), int(np.flatnonzero(usable)[-1])) if usable.any() else (0, -1)
    if last - first + 1 < 2:
        raise SofError(f"{path}: fewer than 2 frames fall inside the span of the end-effector poses"
                       + (" and gripper states" if rec.gripper_states else "") + "; check the topics' clocks")
    span = slice(first, last + 1)
    if np.any(~usable[span]) or np.any(gap[span] > max_pose_gap_s):
        worst = int(np.argmax(np.where(usable[span], gap[span], np.inf)))
        raise SofError(f"{path}: no end-effector pose within {max_pose_gap_s:g} s around the frame "
                       f"{(stamps[first + worst] - stamps[first]) / 1e9:.2f} s into the recording; "
                       "split the recording there or raise --max-pose-gap")
    stamps, logs, gripper = stamps[span], logs[span], gripper[span]
    ee = np.stack([np.interp(stamps, pt, pos[:, k]) for k in range(3)], 1)
    command, seen = _last_before(rec.gripper_commands, logs[1:])
    raw = np.concatenate([np.diff(ee, axis=0) / metres_per_unit, np.where(seen, command, -1.0)[:, None]], 1)
    clipped = int(np.sum(np.abs(raw) > 1.0))
    actions = np.clip(raw, -1.0, 1.0).astype(np.float32)
    arrays = {"rgb": np.stack([f[2] for f in rec.frames[span]]), "ee_pos": ee,
              "gripper": gripper.astype(np.float32)}
    if rec.depth and all(s in rec.depth for s in stamps):
        arrays["depth"] = np.stack([rec.depth[s] for s in stamps]).astype(np.float32)
    elif rec.depth:
        print(f"note: {path.name}: depth left out (not every frame has a depth image with its stamp)")
    if rec.K is not None:
        arrays["intrinsics"] = rec.K
    if rec.cam_pose is not None:
        arrays["cam_pose"] = np.repeat(rec.cam_pose[None], len(stamps), 0)
    return arrays, actions, {"actions_clipped": clipped, "fps": 1e9 / float(np.median(np.diff(stamps)))}


def import_mcap(recordings: list[str | Path], out: str | Path, instruction: str | None = None, task: str | None = None,
                topics: RecordingTopics | None = None, size: tuple[int, int] = (128, 128), crop: bool = True,
                metres_per_unit: float = 0.01, control_rate_hz: float = 0.0, max_pose_gap_s: float = 0.5,
                success: bool = True, finger_joints: tuple = (), max_opening: float = 1.0) -> list[Path]:
    """Import each recording as one D_act episode of dataset `out`; returns the episode files written.
    `finger_joints`, `max_opening`: how a JointState gripper state reads (the robot profile's)."""
    from sof_ros.data.dataset import Dataset

    size = checked_size(size)
    topics = topics or RecordingTopics()
    paths = [Path(p) for p in recordings]
    for p in paths:
        if not p.is_file():
            raise SofError(f"recording {p} does not exist")
    done = imported_sources(out, "mcap_file")
    todo = [p for p in paths if p.name not in done]
    episodes = []
    for p in todo:  # read everything first: a bad file stops the import before anything is written
        rec = read_recording(p, topics, size, crop, finger_joints, max_opening)
        text = instruction or _recorded_instruction(p, rec, topics)
        arrays, actions, info = episode_from_recording(p, rec, metres_per_unit, max_pose_gap_s)
        episodes.append((p, text, arrays, actions, info, rec.frame_id))
    ds = Dataset.create(out)
    written, index = [], ds.next_index()
    for p, text, arrays, actions, info, frame_id in episodes:
        if info["actions_clipped"]:
            print(f"warning: {p.name}: {info['actions_clipped']} action value(s) beyond +-1 unit ({metres_per_unit} m "
                  "per step) clipped: the arm moved faster than the action space allows at this frame rate")
        if control_rate_hz and abs(info["fps"] - control_rate_hz) > 0.25 * control_rate_hz:
            print(f"warning: {p.name}: frames come at {info['fps']:.1f} Hz but the arm steps at {control_rate_hz:g} Hz: "
                  "one action per frame then means another displacement per step than at run time")
        attrs = dict(task=task or text, instruction=text, source="robot", success=success, seed=-1,
                     camera=frame_id or "camera", in_d_act=True, mcap_file=p.name,
                     metres_per_action_unit=metres_per_unit, **info)
        written.append(ds.write_episode(index, attrs, arrays, actions))
        index += 1
    return written


def _recorded_instruction(path: Path, rec: _Recording, topics: RecordingTopics) -> str:
    distinct = list(dict.fromkeys(s.strip() for s in rec.instructions if s.strip()))
    if len(distinct) == 1:
        return distinct[0]
    if not distinct:
        raise SofError(f"{path} has no instruction on {topics.instruction}; pass --instruction 'open the door'")
    raise SofError(f"{path} holds {len(distinct)} instructions ({'; '.join(distinct[:3])}); one recording is one "
                   "episode: pass --instruction, or record one instruction per file")


def main(argv=None):
    def body():
        p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("recordings", nargs="+", help="MCAP files, one episode each")
        p.add_argument("--out", required=True, help="dataset directory (created if missing, appended to if present)")
        p.add_argument("--instruction", help="what the demonstration does (default: the recorded instruction)")
        p.add_argument("--task", help="task name grouping episodes (default: the instruction)")
        p.add_argument("--failed", action="store_true", help="mark the episodes unsuccessful")
        add_frame_args(p)
        add_action_unit_args(p)
        p.add_argument("--max-pose-gap", type=float, default=0.5, help="seconds without an end-effector pose that "
                       "stop the import (default 0.5, the nodes' pose timeout)")
        defaults = RecordingTopics()
        for name, default in vars(defaults).items():
            p.add_argument(f"--{name.replace('_', '-')}-topic", default=default, help=f"default {default}")
        a = p.parse_args(argv)
        topics = RecordingTopics(**{name: getattr(a, f"{name}_topic") for name in vars(defaults)})
        from sof_ros.ros.params import RobotParams

        metres, rate = robot_units(a)
        robot = RobotParams.profile(a.robot)
        written = import_mcap(a.recordings, a.out, a.instruction, a.task, topics, tuple(a.size), not a.stretch,
                              metres, rate, a.max_pose_gap, success=not a.failed,
                              finger_joints=tuple(robot.gripper_joint_names), max_opening=robot.gripper_max_opening)
        report_import(written, a.out, "recording(s)")

    run_cli(body)


if __name__ == "__main__":
    main()
