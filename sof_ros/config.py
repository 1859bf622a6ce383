"""One config system for data, training, evaluation and the ROS nodes.

Every default lives in the dataclasses below; YAML files in `config/` override a subset.
`load_config("config/metaworld.yaml")` returns a `SofConfig`; unknown keys are errors so that
a typo in a YAML file never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from sof_ros.errors import SofError

# The MetaWorld suite evaluated by SOF and AVDC, with the instruction a user would type.
BENCHMARK_TASKS: dict[str, str] = {
    "door-open": "open the door",
    "door-close": "close the door",
    "basketball": "put the basketball into the hoop",
    "shelf-place": "place the block on the shelf",
    "button-press": "press the button",
    "button-press-topdown": "press the button from the top",
    "faucet-close": "close the faucet",
    "faucet-open": "open the faucet",
    "handle-press": "press the handle down",
    "hammer": "hammer the nail into the wall",
    "assembly": "put the ring onto the peg",
}


@dataclass
class SimConfig:
    """Simulator, rendering and episode settings."""

    backend: str = "metaworld"  # metaworld (Sawyer) | libero (Franka Panda) | robosuite (sim.robot): sof_ros.sim.make_arm
    robot: str = ""  # robosuite: the arm (panda | sawyer | iiwa | jaco | kinova3 | ur5e); "" = the backend's own arm
    suite: str = ""  # libero: the suite the task names belong to (libero_goal | libero_10 | ...)
    camera: str = "corner"
    width: int = 128
    height: int = 128
    max_steps: int = 200  # control steps per episode (MetaWorld's own limit is 500)
    render_shadows: bool = False  # off: ~45 fps at 128x128 on CPU instead of ~10
    antialias: bool = True  # MuJoCo's 4x multisampling; off: an RGB frame costs ~1/3 on CPU (a checkpoint
    # trained on frames rendered one way is evaluated on frames rendered the same way: sof-eval reads it)


@dataclass
class CollectConfig:
    """What `sof-collect` records."""

    tasks: list[str] = field(default_factory=lambda: list(BENCHMARK_TASKS))
    episodes_per_task: int = 2
    seed: int = 0
    act_fraction: float = 0.2  # share of episodes marked as the action-labelled set D_act
    expert_noise: float = 0.1  # Gaussian noise on expert actions: varied, still mostly successful demos
    only_successful: bool = False
    cameras: list[str] = field(default_factory=lambda: ["corner"])  # each camera gets its own seeds
    depth: bool = True  # also render depth + segmentation (GT flow, learning-free solver); off: RGB only


@dataclass
class FlowConfig:
    """Optical-flow extraction."""

    estimator: str = "dis"  # dis (DIS medium) | dis_fast | dis_ultrafast | farneback | raft; why dis: docs/flow.md
    raft_weights: str = ""  # local .pth file; RAFT is never downloaded
    workers: int = 2


@dataclass
class SkillConfig:
    """Stage 1: flow-segment autoencoder with FSQ skill tokens.

    A segment is `segment` flow fields `stride` control steps apart (flow from frame t to t+stride,
    `sof-flow --gap stride`), so it spans segment * stride frames. Defaults are the v1 recipe;
    config/metaworld.yaml holds the current one."""

    segment: int = 8  # H: flow fields per skill segment
    stride: int = 1  # control steps (frames) between two flow fields; the flow key is <estimator>_k<stride>
    flow_res: int = 32  # working resolution of flow fields (square)
    image_res: int = 32  # working resolution of RGB inputs (square)
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # 1000 codes
    tokens_per_segment: int = 4
    width: int = 16  # conv channels
    flow_scale: float = 1.0  # flow (working-res px) is divided by this before the network; 0: the std of the
    # training flow on moving pixels, measured by sof-train and stored with the weights
    moving_px: float = 0.5  # a pixel moves when its flow exceeds this many source-image px (metrics, loss weight)
    moving_weight: float = 0.0  # extra loss weight on moving pixels (0: every pixel counts the same)


@dataclass
class PolicyConfig:
    """Stage 2: decoder-only Transformer from (image, instruction[, proprioception]) to skill tokens."""

    d_model: int = 96
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    text_dim: int = 384  # all-MiniLM-L6-v2
    use_proprio: bool = False  # end-effector position + gripper as one more prefix token
    exclude_d_act: bool = False  # train on the videos outside D_act, so plans on D_act are as imperfect as at run time
    image_shift: int = 0  # random-shift augmentation of the image, +- px at image_res (0: none)
    temperature: float = 0.0  # run-time decoding: 0 greedy, else sampling at this temperature
    top_k: int = 0  # with temperature > 0: sample among the k most likely tokens (0: all)


@dataclass
class Flow2ActionConfig:
    """Stage 3: flow plan (+ frame, proprioception) to end-effector actions; the comparison heads
    (Skill2Action, BC, pixel skills) share the same head and options."""

    width: int = 16
    use_proprio: bool = True  # end-effector position and gripper opening, as every arm reports them
    d_act_episodes_per_task_camera: int = 4  # size of the action-labelled set D_act: the first k in_d_act
    # episodes of every (task, camera)
    pool: str = "mean"  # mean: global average of the conv features; flatten: keep the 4x4 layout (where things
    # are); keypoints: spatial softmax at a quarter of flow_res, the expected (x, y) of 32 learned keypoints
    # (where, to a fraction of a cell: placing the hand on a small object) + the global average
    chunk: int = 0  # actions predicted per plan (0: the segment's span, segment * stride)
    plan_source: str = "encoder"  # tokens the head is trained on: encoder (of the real flow) | predicted (Stage 2)
    predicted_fraction: float = 1.0  # with plan_source predicted: share of batches on predicted tokens (rest encoder)
    image_shift: int = 0  # random-shift augmentation (+- px at flow_res) of the image and plan together


@dataclass
class TrainConfig:
    dataset: str = "data/mw_train"
    out: str = "runs/sof"
    device: str = "cpu"
    seed: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    skill_steps: int = 1500
    policy_steps: int = 1500
    f2a_steps: int = 1500
    baseline_steps: int = 1000  # skill2action and bc (the pixel-space ablation gets the SOF stages' budgets)
    val_fraction: float = 0.1  # held-out episodes per task for reports
    log_every: int = 100
    ckpt_every: int = 500
    num_threads: int = 2
    cache: bool = False  # keep the working-resolution tensors of the dataset in DATASET/.cache (reloads in seconds)


@dataclass
class EvalConfig:
    """The evaluation protocol of AVDC and SOF on MetaWorld: the 11 tasks seen from three cameras,
    MetaWorld's own 500-step limit, held-out seeds; the score is the mean over task x camera. A
    checkpoint stores the protocol it was trained for and `sof-eval` reads it from there."""

    tasks: list[str] = field(default_factory=lambda: list(BENCHMARK_TASKS))
    cameras: list[str] = field(default_factory=lambda: ["corner", "corner2", "corner3"])
    episodes_per_task_camera: int = 10
    first_seed: int = 1000  # held out: training demos use seeds 0..N
    max_steps: int = 500  # MetaWorld's own episode limit
    replan_every: int = 4
    rows: list[str] = field(default_factory=lambda: ["sof", "sof_learning_free", "skill2action", "bc", "pixel_skills",
                                                     "expert"])
    ensemble: float = 0.0  # temporal ensembling of overlapping action chunks (weights exp(-ensemble * age)); 0: off
    # learning-free row on predicted plans: the solver reads the plan's flow times this. Stage 1 learns
    # from DIS flow, which under-reports motion, and its decoder shrinks it further; chosen per checkpoint
    # on dev seeds (docs/learning_free.md). sof-eval --solver flow_scale=X overrides it
    plan_flow_scale: float = 1.0
    # learning-free row on predicted plans: the medoid of this many plans (the greedy one and
    # plan_samples - 1 sampled at plan_sample_temperature), the one closest to all the others, instead
    # of the greedy plan alone; 1: greedy. Recorded in sof-eval's protocol when not 1
    plan_samples: int = 1
    plan_sample_temperature: float = 1.0


@dataclass
class SofConfig:
    """All sections; a YAML file sets any subset of them."""

    sim: SimConfig = field(default_factory=SimConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    skill: SkillConfig = field(default_factory=SkillConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    f2a: Flow2ActionConfig = field(default_factory=Flow2ActionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _merge(obj: Any, overrides: dict, where: str) -> Any:
    if not isinstance(overrides, dict):
        raise SofError(f"config section '{where}' must be a mapping, got {type(overrides).__name__}")
    hints = get_type_hints(type(obj))
    known = {f.name for f in dataclasses.fields(obj)}
    for key, value in overrides.items():
        removed = _REMOVED.get(f"{where.rsplit('.', 1)[-1]}.{key}")
        if key not in known and removed:
            raise SofError(f"config key '{where}.{key}' was removed: {removed}")
        if key not in known:
            raise SofError(
                f"unknown config key '{where}.{key}'; known keys: {', '.join(sorted(known))}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{where}.{key}")
            continue
        setattr(obj, key, _checked(hints[key], value, f"{where}.{key}"))
    return obj


def _checked(hint: Any, value: Any, name: str) -> Any:
    """`value` as type `hint` (int -> float widened), or a SofError naming the key and the type wanted."""
    if get_origin(hint) is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            raise SofError(f"config key '{name}' must be a list of {item.__name__} (YAML: [a, b, ...]), "
                           f"got {value!r}")
        return [_checked(item, v, f"{name}[{i}]") for i, v in enumerate(value)]
    if hint in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if hint is int and not float(value).is_integer():
            raise SofError(f"config key '{name}' must be int, got {value!r}")
        return hint(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or isinstance(value, bool) != (hint is bool)):
        raise SofError(f"config key '{name}' must be {hint.__name__}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: dict | None = None,
                base: SofConfig | None = None) -> SofConfig:
    """Defaults (or `base`, e.g. a checkpoint's config), then the YAML file's keys (if any), then
    explicit overrides."""
    cfg = base if base is not None else SofConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SofError(f"config file {path} does not exist; pass a YAML file from config/")
        _merge(cfg, _read_yaml(path, "fix the file"), path.name)
    if overrides:
        _merge(cfg, overrides, "overrides")
    return cfg


def _read_yaml(path: Path, remedy: str) -> dict:
    """The mapping in a YAML file; a SofError naming the file and `remedy` when it is not one."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SofError(f"config file {path} is not valid YAML ({' '.join(str(exc).split())}); {remedy}") from None
    if not isinstance(data, dict):
        raise SofError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}; {remedy}")
    return data


def load_checkpoint_config(checkpoint: str | Path) -> SofConfig:
    """The config a checkpoint was trained with (CHECKPOINT/config.yaml, written by sof-train),
    checked like any config file: a damaged or hand-edited one is named in a one-line SofError."""
    path = Path(checkpoint) / "config.yaml"
    if not path.is_file():
        raise SofError(f"{checkpoint} is not a sof_ros checkpoint (no config.yaml); train one with "
                       "`sof-train` or use the shipped models/sof_metaworld")
    remedy = "re-copy the checkpoint, or retrain it with sof-train"
    data = _upgrade(_read_yaml(path, remedy))
    try:
        return _merge(SofConfig(), data, path.name)
    except SofError as exc:
        raise SofError(f"{path}: {exc}; {remedy}") from None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# Keys renamed since checkpoints were first written: old name -> new name, per section.
_RENAMED = {"eval": {"episodes_per_task": "episodes_per_task_camera"},
            "f2a": {"d_act_episodes_per_task": "d_act_episodes_per_task_camera"}}  # one camera then


# Keys removed, with what to write instead (a user's YAML naming one gets this message).
_REMOVED = {"flow.dis_preset": "the DIS preset is part of the estimator's name, the one key sof-flow writes, "
                               "sof-train reads and the camera node runs: set flow.estimator to dis (medium), "
                               "dis_fast or dis_ultrafast"}


def _upgrade(data: dict) -> dict:
    """A checkpoint config written before a key was renamed or removed, in today's keys."""
    out = dict(data)
    for section, renames in _RENAMED.items():
        if isinstance(out.get(section), dict):
            out[section] = {renames.get(k, k): v for k, v in out[section].items()}
    flow = out.get("flow")
    if isinstance(flow, dict) and "dis_preset" in flow:  # it never reached sof-train: the key it read is estimator
        out["flow"] = {k: v for k, v in flow.items() if k != "dis_preset"}
    return out


def from_dict(data: dict) -> SofConfig:
    """Rebuild a config saved with a checkpoint (same merge rules as YAML)."""
    return _merge(SofConfig(), _upgrade(data), "checkpoint")
