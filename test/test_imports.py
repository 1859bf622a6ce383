"""Second and third data sources (issue 11): LeRobot v2.x folders (sof-import-lerobot) and the robot
recorder's MCAP files (sof-import-mcap), both written here as tiny synthetic recordings."""
import json

import numpy as np
import pytest

from sof_ros.data.dataset import Dataset, validate_dataset
from synthetic_episodes import sliding_frames, write_mp4

CAM = "observation.images.top"
TASKS = ["pick the cube", "open the drawer"]
T = 12


def write_lerobot(root, cameras=(CAM,), n_frames=(T, T), version="v2.1"):
    """A LeRobot v2.1 folder: state = [x, y, z, gripper], action = [dx, dy, dz, grip] in metres."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "meta").mkdir(parents=True)
    features = {key: {"dtype": "video", "shape": [48, 64, 3], "names": ["height", "width", "channel"]}
                for key in cameras}
    features.update({name: {"dtype": "float32", "shape": [4], "names": None} for name in ("observation.state", "action")})
    features.update({name: {"dtype": "int64", "shape": [1], "names": None}
                     for name in ("frame_index", "episode_index", "index", "task_index")})
    (root / "meta" / "info.json").write_text(json.dumps({
        "codebase_version": version, "robot_type": "test", "fps": 10, "chunks_size": 1000,
        "total_episodes": len(n_frames),
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": features}))
    (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                                       for i, t in enumerate(TASKS)))
    (root / "meta" / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": i, "tasks": [TASKS[i]], "length": n}) + "\n" for i, n in enumerate(n_frames)))
    for i, n in enumerate(n_frames):
        pos = 0.3 + 0.004 * np.arange(n)[:, None] * np.array([1.0, -0.5, 0.25])
        grip = np.where(np.arange(n) < n // 2, 0.8, 0.1)
        state = np.concatenate([pos, grip[:, None]], 1)
        action = np.concatenate([np.diff(pos, axis=0, append=pos[-1:] + (pos[-1:] - pos[-2:-1])),
                                 np.where(np.arange(n) < n // 2, -1.0, 1.0)[:, None]], 1)
        table = pa.table({
            "observation.state": pa.array(state.astype(np.float32).tolist(), pa.list_(pa.float32())),
            "action": pa.array(action.astype(np.float32).tolist(), pa.list_(pa.float32())),
            "timestamp": pa.array(np.arange(n) / 10.0, pa.float32()),
            "frame_index": pa.array(np.arange(n)), "episode_index": pa.array(np.full(n, i)),
            "index": pa.array(np.arange(n) + i * 1000), "task_index": pa.array(np.full(n, i))})
        (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "data" / "chunk-000" / f"episode_{i:06d}.parquet")
        for cam in cameras:
            (root / "videos" / "chunk-000" / cam).mkdir(parents=True, exist_ok=True)
            write_mp4(root / "videos" / "chunk-000" / cam / f"episode_{i:06d}.mp4",
                      sliding_frames(T, (1, 0), seed=i, size=64)[:, 8:56])
    return root


def _import_lerobot(*args):
    from sof_ros.data.lerobot_import import main

    main([str(a) for a in args])


def test_lerobot_import_video_only_by_default(tmp_path):
    src = write_lerobot(tmp_path / "lr")
    _import_lerobot(src, "--out", tmp_path / "ds", "--size", 32, 32)
    assert validate_dataset(tmp_path / "ds") == 2
    ds = Dataset(tmp_path / "ds")
    infos = ds.episodes()
    assert [i.instruction for i in infos] == TASKS and [i.length for i in infos] == [T, T]
    assert not any(i.in_d_act or i.has_proprio for i in infos)  # state and action ignored unless mapped
    assert ds.load(infos[0].path)["rgb"].shape == (T, 32, 32, 3)
    _import_lerobot(src, "--out", tmp_path / "ds")  # re-run: nothing new
    assert len(Dataset(tmp_path / "ds").episodes()) == 2


def test_lerobot_import_mapped_state_and_ee_delta_actions(tmp_path):
    src = write_lerobot(tmp_path / "lr")
    _import_lerobot(src, "--out", tmp_path / "ds", "--size", 32, 32, "--fps-stride", 2, "--state-ee-pos", 0, 1, 2,
                    "--state-gripper", 3, "--action-ee-delta", 0, 1, 2, 3, "--action-metres", 1.0, "--robot", "panda")
    validate_dataset(tmp_path / "ds")
    ds = Dataset(tmp_path / "ds")
    info = ds.episodes()[0]
    assert info.in_d_act and info.has_proprio and info.length == T // 2
    arr = ds.load(info.path, ("ee_pos", "gripper"))
    pos = 0.3 + 0.004 * np.arange(0, T, 2)[:, None] * np.array([1.0, -0.5, 0.25])
    np.testing.assert_allclose(arr["ee_pos"], pos, atol=1e-6)
    np.testing.assert_allclose(arr["gripper"], np.where(np.arange(0, T, 2) < T // 2, 0.8, 0.1), atol=1e-6)
    acts = ds.load_actions(info.path)
    # two frames of 4 mm along x per action, panda: 0.01 m per unit -> 0.8 units
    np.testing.assert_allclose(acts[:, :3], np.tile([[0.8, -0.4, 0.2]], (T // 2 - 1, 1)), atol=1e-5)
    np.testing.assert_array_equal(acts[:, 3], np.where(np.arange(1, T - 2, 2) < T // 2, -1.0, 1.0))  # last frame of each step


@pytest.mark.parametrize("case, expected", [
    ("two-cameras", r"has 2 video cameras .*choose one with --camera"),
    ("frame-mismatch", r"episode_000001.mp4 has 12 frames but .*episode_000001.parquet has 10 rows"),
    ("v3", r"codebase_version v3.0 is not supported"),
    ("state-index", r"--state-ee-pos 0 1 9: .*'observation.state' has 4 columns"),
    ("state-without-gripper", r"--state-ee-pos I J K and --state-gripper G together"),
])
def test_lerobot_import_errors(tmp_path, capsys, case, expected):
    import re

    import pyarrow.parquet as pq

    src = write_lerobot(tmp_path / "lr", cameras=(CAM, "observation.images.wrist") if case == "two-cameras" else (CAM,),
                        version="v3.0" if case == "v3" else "v2.1")
    extra = {"state-index": ["--state-ee-pos", 0, 1, 9, "--state-gripper", 3],
             "state-without-gripper": ["--state-ee-pos", 0, 1, 2]}.get(case, [])
    if case == "frame-mismatch":
        path = src / "data" / "chunk-000" / "episode_000001.parquet"
        pq.write_table(pq.read_table(path).slice(0, 10), path)
        extra = ["--action-ee-delta", 0, 1, 2, 3]
    with pytest.raises(SystemExit) as exc:
        _import_lerobot(src, "--out", tmp_path / "ds", *extra)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2 and err.startswith("error: ") and re.search(expected, err), err


# --- robot recordings (MCAP) -----------------------------------------------------------------------
FRAMES, T0, PERIOD = 8, 1_000_000_000_000, 100_000_000  # 10 Hz camera, stamps in ns


def write_recording(path, gripper_state=True, instruction="push the block right", joint_states=False):
    """A teleoperated episode as the recorder node writes it: 48x64 frames, depth, camera_info, an
    end-effector moving +5 mm per frame along x (poses at 20 Hz), gripper state and commands.
    joint_states: the gripper state is a real Panda's /joint_states (fingers 0.9 - 0.1 k of 0.08 m
    open, each preceded by an arm-only message, as a second publisher on the topic sends)."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64, String

    from sof_ros.ros import conversions as cv
    from sof_ros.ros.params import Topics
    from sof_ros.ros.recorder_node import McapRecorder, msg_class

    rec = McapRecorder(path)
    types = {Topics.IMAGE: "sensor_msgs/msg/Image", Topics.DEPTH: "sensor_msgs/msg/Image",
             Topics.CAMERA_INFO: "sensor_msgs/msg/CameraInfo", Topics.SIM_EE_POSE: "geometry_msgs/msg/PoseStamped",
             Topics.GRIPPER: "std_msgs/msg/Float64", Topics.INSTRUCTION: "std_msgs/msg/String"}
    if gripper_state:
        types[Topics.SIM_GRIPPER_STATE] = "sensor_msgs/msg/JointState" if joint_states else "std_msgs/msg/Float64"
    for topic, type_name in types.items():
        rec.add_topic(topic, type_name, msg_class(type_name))
    frames = sliding_frames(FRAMES, (1, 0), seed=3, size=64)[:, 8:56]
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    rec.write(Topics.INSTRUCTION, serialize_message(String(data=instruction)), T0 - 2 * PERIOD)
    for k in range(-2, 2 * FRAMES + 2):  # poses from before the first to after the last frame
        stamp = T0 + k * PERIOD // 2
        pose = cv.matrix_to_pose_stamped(np.array([[1, 0, 0, 0.4 + 0.0025 * k], [0, 1, 0, 0.6], [0, 0, 1, 0.2],
                                                   [0, 0, 0, 1.0]]), stamp, "world")
        rec.write(Topics.SIM_EE_POSE, serialize_message(pose), stamp + 1_000_000)
    for k in range(FRAMES):
        stamp = T0 + k * PERIOD
        if gripper_state and joint_states:
            arm = JointState(name=[f"panda_joint{i}" for i in range(1, 8)], position=[0.1] * 7)
            half = 0.04 * (0.9 - 0.1 * k)
            hand = JointState(name=["panda_finger_joint1", "panda_finger_joint2"], position=[half, half])
            rec.write(Topics.SIM_GRIPPER_STATE, serialize_message(hand), stamp - 20_000_000)
            rec.write(Topics.SIM_GRIPPER_STATE, serialize_message(arm), stamp - 10_000_000)
        elif gripper_state:
            rec.write(Topics.SIM_GRIPPER_STATE, serialize_message(Float64(data=0.9 - 0.1 * k)), stamp - 10_000_000)
        rec.write(Topics.IMAGE, serialize_message(cv.image_to_msg(frames[k], "rgb8", stamp, "cam_optical")), stamp + 5_000_000)
        rec.write(Topics.DEPTH, serialize_message(cv.image_to_msg(np.full((48, 64), 1.5 + 0.01 * k, np.float32), "32FC1",
                                                                  stamp, "cam_optical")), stamp + 6_000_000)
        rec.write(Topics.CAMERA_INFO, serialize_message(cv.camera_info_msg(K, 64, 48, stamp, "cam_optical")), stamp + 6_000_000)
        # the command answering frame k: open for the first half, then close
        rec.write(Topics.GRIPPER, serialize_message(Float64(data=-1.0 if k < FRAMES // 2 else 1.0)), stamp + 50_000_000)
    rec.close()
    return frames, K


def _import_mcap(*args):
    from sof_ros.data.mcap_import import main

    main([str(a) for a in args])


def test_mcap_round_trip_to_d_act(tmp_path):
    from sof_ros.data.video_import import resize_frame

    frames, K = write_recording(tmp_path / "demo.mcap")
    _import_mcap(tmp_path / "demo.mcap", "--out", tmp_path / "ds", "--size", 32, 32)
    assert validate_dataset(tmp_path / "ds") == 1
    ds = Dataset(tmp_path / "ds")
    (info,) = ds.episodes()
    assert info.in_d_act and info.has_proprio and info.source == "robot" and info.length == FRAMES
    assert info.instruction == "push the block right"
    arr = ds.load(info.path, ("rgb", "ee_pos", "gripper", "depth", "intrinsics"))
    np.testing.assert_array_equal(arr["rgb"][3], resize_frame(frames[3], (32, 32), True))
    np.testing.assert_allclose(arr["ee_pos"], [[0.4 + 0.005 * k, 0.6, 0.2] for k in range(FRAMES)], atol=1e-9)
    np.testing.assert_allclose(arr["gripper"], 0.9 - 0.1 * np.arange(FRAMES), atol=1e-6)
    np.testing.assert_allclose(arr["depth"][:, 0, 0], 1.5 + 0.01 * np.arange(FRAMES), atol=1e-6)
    # 48x64 -> centre 48x48 crop (x0 = 8) -> 32x32: focal x 2/3, principal point in the crop's pixel centres
    np.testing.assert_allclose(arr["intrinsics"], [[50 * 2 / 3, 0, (31.5 - 8 + 0.5) * 2 / 3 - 0.5],
                                                   [0, 50 * 2 / 3, (23.5 + 0.5) * 2 / 3 - 0.5], [0, 0, 1]])
    acts = ds.load_actions(info.path)
    np.testing.assert_allclose(acts[:, :3], np.tile([[0.5, 0.0, 0.0]], (FRAMES - 1, 1)), atol=1e-5)  # 5 mm / 0.01 m
    np.testing.assert_array_equal(acts[:, 3], np.where(np.arange(FRAMES - 1) < FRAMES // 2, -1.0, 1.0))
    import h5py

    with h5py.File(info.path) as f:
        assert f.attrs["mcap_file"] == "demo.mcap" and f.attrs["metres_per_action_unit"] == 0.01
        assert f.attrs["actions_clipped"] == 0 and abs(f.attrs["fps"] - 10.0) < 1e-6
    _import_mcap(tmp_path / "demo.mcap", "--out", tmp_path / "ds")  # already imported: skipped
    assert len(Dataset(tmp_path / "ds").episodes()) == 1


def test_mcap_without_gripper_state_says_what_to_do(tmp_path, capsys):
    write_recording(tmp_path / "demo.mcap", gripper_state=False)
    with pytest.raises(SystemExit):
        _import_mcap(tmp_path / "demo.mcap", "--out", tmp_path / "ds")
    err = capsys.readouterr().err
    assert "has no /sof/sim/gripper_state topic" in err and "--gripper-state-topic ''" in err
    assert not (tmp_path / "ds").exists()  # nothing written
    _import_mcap(tmp_path / "demo.mcap", "--out", tmp_path / "ds", "--gripper-state-topic", "", "--robot", "panda",
                 "--instruction", "push")
    ds = Dataset(tmp_path / "ds")
    (info,) = ds.episodes()
    assert info.instruction == "push" and not ds.load(info.path, ("gripper",))["gripper"].any()


def test_mcap_gripper_state_from_a_real_arms_joint_states(tmp_path, capsys):
    """A Panda records /joint_states, not the sim bridge's Float64: the finger opening is read as the
    nodes read it (the --robot profile's finger joints / gripper_max_opening), arm-only messages skipped."""
    write_recording(tmp_path / "demo.mcap", joint_states=True)
    _import_mcap(tmp_path / "demo.mcap", "--out", tmp_path / "ds", "--robot", "panda")
    ds = Dataset(tmp_path / "ds")
    (info,) = ds.episodes()
    np.testing.assert_allclose(ds.load(info.path, ("gripper",))["gripper"], 0.9 - 0.1 * np.arange(FRAMES), atol=1e-6)
    # another arm's profile has other finger joints: named, with what to do
    with pytest.raises(SystemExit):
        _import_mcap(tmp_path / "demo.mcap", "--out", tmp_path / "ds2", "--robot", "sawyer")
    err = capsys.readouterr().err
    assert "no usable gripper state" in err and "right_gripper_l_finger_joint" in err and "--robot" in err, err
    assert not (tmp_path / "ds2").exists()


def test_truncated_mcap_is_named(tmp_path, capsys):
    write_recording(tmp_path / "demo.mcap")
    data = (tmp_path / "demo.mcap").read_bytes()
    (tmp_path / "demo.mcap").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit):
        _import_mcap(tmp_path / "demo.mcap", "--out", tmp_path / "ds")
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "demo.mcap" in err and "\n" not in err, err
