"""The HDF5 episode format: write/read round trip and the validator's rejections (with messages)."""
import json

import h5py
import numpy as np
import pytest

from sof_ros.data.dataset import Dataset, validate_dataset, validate_episode
from sof_ros.errors import DatasetError

T, H, W = 5, 16, 20


def _arrays(rng, t=T):
    return {
        "rgb": rng.integers(0, 256, (t, H, W, 3), dtype=np.uint8),
        "depth": rng.uniform(0.5, 2.0, (t, H, W)).astype(np.float32),
        "seg": rng.integers(-1, 10, (t, H, W)).astype(np.int16),
        "intrinsics": np.array([[20.0, 0, (W - 1) / 2], [0, 20.0, (H - 1) / 2], [0, 0, 1]]),
        "cam_pose": np.repeat(np.eye(4)[None], t, 0),
        "ee_pos": rng.normal(size=(t, 3)),
        "gripper": rng.uniform(size=t).astype(np.float32),
        "sim/body_pos": rng.normal(size=(t, 4, 3)),
        "sim/body_mat": np.repeat(np.eye(3)[None, None], t, 0).repeat(4, 1),
        "sim/geom_body": np.arange(10, dtype=np.int32) % 4,
    }


ATTRS = dict(task="door-open", instruction="open the door", source="metaworld", success=True, seed=3,
             camera="corner", in_d_act=True)


@pytest.fixture
def ds_with_episode(tmp_path):
    rng = np.random.default_rng(0)
    ds = Dataset.create(tmp_path / "ds")
    arrays = _arrays(rng)
    actions = rng.uniform(-1, 1, (T - 1, 4)).astype(np.float32)
    path = ds.write_episode(0, ATTRS, arrays, actions)
    return ds, path, arrays, actions


def test_round_trip(ds_with_episode):
    ds, path, arrays, actions = ds_with_episode
    assert validate_dataset(ds.root) == 1
    ds2 = Dataset(ds.root, validate=True)
    (info,) = ds2.episodes()
    assert (info.index, info.task, info.instruction, info.success, info.length, info.in_d_act, info.source) == (
        0, "door-open", "open the door", True, T, True, "metaworld")
    loaded = ds2.load(path, tuple(arrays))
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
        assert loaded[key].dtype == value.dtype, key
    np.testing.assert_array_equal(ds2.load_actions(path), actions)
    # actions live in a separate store: the episode file (the action-free video) has none
    with h5py.File(path) as f:
        assert "actions" not in f
        assert f["rgb"].chunks == (1, H, W, 3) and f["rgb"].compression == "gzip"
    assert ds2.action_path(path).is_file() and ds2.next_index() == 1
    assert not list((ds.root / "episodes").glob("*.tmp"))


def test_missing_flow_and_actions_messages(ds_with_episode, tmp_path):
    ds, path, arrays, _ = ds_with_episode
    with pytest.raises(DatasetError, match="run `sof-flow`"):
        ds.load(path, ("flow/dis",))
    p2 = ds.write_episode(1, ATTRS, arrays)  # no actions: a video-only episode
    with pytest.raises(DatasetError, match="has no actions"):
        ds.load_actions(p2)


def test_rejects_missing_dataset_json(tmp_path):
    with pytest.raises(DatasetError, match="no dataset.json"):
        Dataset(tmp_path)


def test_rejects_wrong_version(ds_with_episode):
    ds = ds_with_episode[0]
    (ds.root / "dataset.json").write_text(json.dumps({"format": "sof_ros.dataset", "version": 99}))
    with pytest.raises(DatasetError, match="version 99 is not supported"):
        Dataset(ds.root)


def test_rejects_empty_dataset(tmp_path):
    Dataset.create(tmp_path / "empty")
    with pytest.raises(DatasetError, match="holds no episodes"):
        Dataset(tmp_path / "empty", validate=True)


@pytest.mark.parametrize("rgb", [np.zeros((T, H, W, 3), np.float32), np.zeros((T, H, W), np.uint8),
                                 np.zeros((T, H, W, 4), np.uint8)], ids=["float", "no-channels", "rgba"])
def test_rejects_bad_rgb(tmp_path, rgb):
    ds = Dataset.create(tmp_path / "ds")
    arrays = _arrays(np.random.default_rng(1))
    arrays["rgb"] = rgb
    path = ds.write_episode(0, ATTRS, arrays)
    with pytest.raises(DatasetError, match=r"'rgb' must be \(T, H, W, 3\) uint8"):
        validate_episode(path)


def test_rejects_nan_depth(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    arrays = _arrays(np.random.default_rng(2))
    arrays["depth"][2, 3, 4] = np.nan
    ds.write_episode(0, ATTRS, arrays)
    with pytest.raises(DatasetError, match="'depth' has NaN/inf"):
        validate_dataset(ds.root)


def test_rejects_action_shape_mismatch(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    ds.write_episode(0, ATTRS, _arrays(np.random.default_rng(3)), np.zeros((T, 4), np.float32))  # T, not T-1
    with pytest.raises(DatasetError, match=r"'actions' has shape \(5, 4\), expected \(4, 4\)"):
        validate_dataset(ds.root)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_rejects_damaged_h5(ds_with_episode, damage):
    ds, path = ds_with_episode[:2]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not an hdf5 file at all" * 50)
    with pytest.raises(DatasetError, match="cannot open .* as HDF5"):
        validate_dataset(ds.root)


@pytest.mark.parametrize("change, expected", [
    (lambda a: a.update(ee_pos=a["ee_pos"][:-1], gripper=a["gripper"][:-1]),
     r"ep_000000.h5: 'ee_pos' has shape \(4, 3\), expected \(5, 3\) \(one per frame of 'rgb'\)"),
    (lambda a: a.pop("gripper"), r"has 'ee_pos' but no 'gripper'; proprioception needs both"),
    (lambda a: a["ee_pos"].__setitem__((2, 1), np.inf), r"'ee_pos' contains NaN/inf"),
], ids=["short-proprio", "ee-without-gripper", "inf-ee"])
def test_rejects_bad_proprioception(tmp_path, change, expected):
    """Proprioception one frame short used to train silently, shifting every later episode's."""
    ds = Dataset.create(tmp_path / "ds")
    arrays = _arrays(np.random.default_rng(4))
    change(arrays)
    ds.write_episode(0, ATTRS, arrays)
    with pytest.raises(DatasetError, match=expected):
        validate_dataset(ds.root)


def test_rgb_only_episode_is_valid_without_proprioception(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    ds.write_episode(0, dict(ATTRS, source="video", in_d_act=False), {"rgb": np.zeros((T, H, W, 3), np.uint8)})
    (info,) = Dataset(ds.root, validate=True).episodes()
    assert not info.has_proprio and not info.in_d_act
