"""The single source of truth for the SOF ROS graph: which nodes run for sim | panda | fr3 | sawyer and
with which parameters (config/<robot>.yaml + a few overrides from launch arguments / CLI flags).

Both consumers are built from `plan()`:
  * launch/sof_{sim,panda,fr3,sawyer}.launch.py -> `launch_description_entries()` -> launch_ros Node(...)
  * `sof-bringup` (sof_ros/ros/bringup.py)   -> the same NodeSpecs as processes or one composed process
test/test_graph.py checks that both describe the same nodes and effective parameters.

Pure Python (no rclpy, no launch) so it can be imported anywhere.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sof_ros.errors import SofError
from sof_ros.ros import params as P

PACKAGE = "sof_ros"
ROBOTS: dict[str, str] = {"sim": "sim.yaml", "panda": "panda.yaml", "fr3": "fr3.yaml", "sawyer": "sawyer.yaml"}
NODE_ORDER: dict[str, list[str]] = {
    "sim": ["sof_sim_bridge", "sof_camera", "sof_policy", "sof_flow2action"],
    "panda": ["sof_camera", "sof_policy", "sof_flow2action"],
    "fr3": ["sof_camera", "sof_policy", "sof_flow2action"],
    "sawyer": ["sof_camera", "sof_policy", "sof_flow2action"],
}
CAMERA_SOURCES = ("sim", "topic", "realsense")
# Simulation mode of a real robot's graph: a simulator stands in for the arm and camera behind the
# same command interface; config/<file> adds the sim bridge and overrides only what must differ.
SIM_MODES: dict[str, dict[str, str]] = {"panda": {"libero": "panda_sim.yaml"}}

# (name, default, description) of the launch arguments; bringup has the matching flags.
LAUNCH_ARGUMENTS: list[tuple[str, str, str]] = [
    ("robot", "", "sim | panda | fr3 | sawyer (defaults to the launch file's robot)"),
    ("camera_source", "", "override sof_camera source: sim | topic | realsense (empty: from the YAML)"),
    ("checkpoint", "", "SOF checkpoint directory for policy and flow2action (empty: from the YAML)"),
    ("task", "", "sim / sim mode only: simulator task for the sim bridge (empty: from the YAML)"),
    ("sim", "", "panda: 'libero' runs the graph against the LIBERO Panda (sim bridge, config/panda_sim.yaml) "
                "instead of the real arm and camera (empty: the real robot)"),
    ("record", "", "write an MCAP recording of the run to this file (empty: no recording)"),
    ("rviz", "false", "start RViz with config/sof.rviz"),
]


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def share_dir() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # not installed with ament, or AMENT_PREFIX_PATH unset
        return None


def config_dir() -> Path:
    """config/ of the source tree if present (development), else the installed share directory."""
    src = _repo_root() / "config"
    if (src / "sim.yaml").is_file():
        return src
    share = share_dir()
    if share is not None and (share / "config" / "sim.yaml").is_file():
        return share / "config"
    raise SofError(f"cannot find sof_ros config files in {src} or the installed share directory")


def params_file(robot: str) -> Path:
    if robot not in ROBOTS:
        raise SofError(f"unknown robot '{robot}'; choose one of: {', '.join(ROBOTS)}")
    return config_dir() / ROBOTS[robot]


def rviz_config() -> Path:
    return config_dir() / "sof.rviz"


def load_yaml_params(path: str | Path) -> dict[str, dict[str, Any]]:
    """ROS 2 params file -> {node_name: {dotted.param: value}}."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SofError(f"cannot read ROS parameter file {path}: {exc}") from None
    out = {}
    for node, body in data.items():
        if not isinstance(body, dict) or set(body) != {"ros__parameters"}:
            raise SofError(f"{path}: section '{node}' must contain exactly 'ros__parameters'")
        out[node.lstrip("/")] = P.flatten(body["ros__parameters"] or {})
    return out


def resolve_checkpoint(path: str) -> str:
    """Absolute checkpoint path: as given if it exists relative to the working directory, else
    relative to the source tree, else the installed share directory; unchanged if none exists
    (the node then reports it)."""
    if not path or os.path.isabs(path):  # empty: left to the user (the real-arm configs), reported by the nodes
        return path
    candidates = [Path.cwd() / path, _repo_root() / path]
    share = share_dir()
    if share is not None:
        candidates.append(share / "models" / Path(path).name)
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    return path


@dataclass
class NodeSpec:
    """One node of the graph: what launch_ros.actions.Node and bringup need."""

    name: str
    module: str
    executable: str
    params_file: str
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted name -> value

    @property
    def params_cls(self) -> type:
        return P.NODES[self.name][0]

    def file_params(self) -> dict[str, Any]:
        return load_yaml_params(self.params_file).get(self.name, {})

    def effective(self) -> dict[str, Any]:
        """Every parameter's value as the node will see it: defaults < YAML < overrides."""
        flat = {**self.file_params(), **self.overrides}
        return P.flatten(dataclasses.asdict(P.build(self.params_cls, flat)))


def _check_keys(spec: NodeSpec, flat: dict[str, Any], where: str) -> None:
    known = dict(P.iter_fields(spec.params_cls))
    for key, value in flat.items():
        if key not in known:
            raise SofError(f"{where}: unknown parameter '{spec.name}.{key}'")
        kind = P.field_kind(known[key])
        ok = {
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, float),
            "str": isinstance(value, str),
            "list[float]": isinstance(value, list) and value and all(isinstance(v, float) for v in value),
            "list[str]": isinstance(value, list) and value and all(isinstance(v, str) for v in value),
        }[kind]
        if not ok:
            raise SofError(f"{where}: parameter '{spec.name}.{key}' must be {kind} "
                           f"(ROS parameter types are strict: write 1.0 for floats), got {value!r}")


def plan(robot: str, camera_source: str = "", checkpoint: str = "", task: str = "", record: str = "",
         params: dict[str, Any] | None = None, sim: str = "") -> list[NodeSpec]:
    """NodeSpecs for `robot`. `params` = extra overrides {'node.dotted.key': value}. `sim` (e.g.
    panda + libero): the robot's own nodes and parameters, plus a sim bridge playing the arm and
    camera, with config/<robot>_sim.yaml's few overrides on top of config/<robot>.yaml."""
    pfile = params_file(robot)
    file_params = load_yaml_params(pfile)
    overlay: dict[str, dict[str, Any]] = {}
    ofile = pfile
    if sim:
        if sim not in SIM_MODES.get(robot, {}):
            modes = [f"{r} {m}" for r, ms in SIM_MODES.items() for m in ms]
            raise SofError(f"no simulation mode '{sim}' for robot {robot}; available: {', '.join(modes)}")
        ofile = config_dir() / SIM_MODES[robot][sim]
        overlay = load_yaml_params(ofile)
    names = (["sof_sim_bridge"] if sim else []) + list(NODE_ORDER[robot]) + (["sof_recorder"] if record else [])
    specs = {n: NodeSpec(n, P.NODES[n][1], P.NODES[n][2], str(ofile if n == "sof_sim_bridge" else pfile))  # the
             # bridge of a sim mode lives in the overlay file
             for n in names}
    for n, spec in specs.items():
        _check_keys(spec, file_params.get(n, {}), str(pfile))
        if sim and n != "sof_sim_bridge":
            _check_keys(spec, overlay.get(n, {}), str(ofile))
            spec.overrides.update(overlay.get(n, {}))
    if sim:
        file_params = {n: {**file_params.get(n, {}), **overlay.get(n, {})} for n in set(file_params) | set(overlay)}
    if camera_source:
        if camera_source not in CAMERA_SOURCES:
            raise SofError(f"camera source must be one of {CAMERA_SOURCES}, got '{camera_source}'")
        specs["sof_camera"].overrides["source"] = camera_source
    if task:
        if "sof_sim_bridge" not in specs:
            raise SofError("task selects the simulator task of the sim bridge; it only applies to robot sim or a sim mode")
        specs["sof_sim_bridge"].overrides["task"] = task
    if record:
        specs["sof_recorder"].overrides["path"] = str(Path(record).expanduser().resolve())
    for n in ("sof_policy", "sof_flow2action"):
        ck = checkpoint or file_params.get(n, {}).get("agent.checkpoint", P.AgentParams().checkpoint)
        specs[n].overrides["agent.checkpoint"] = resolve_checkpoint(ck)
    if "sof_sim_bridge" in specs and "antialias" not in {**file_params.get("sof_sim_bridge", {}),
                                                          **specs["sof_sim_bridge"].overrides}:
        rendering = checkpoint_antialias(specs["sof_policy"].overrides["agent.checkpoint"])
        if rendering is not None:  # the simulator renders frames as the checkpoint was trained on
            specs["sof_sim_bridge"].overrides["antialias"] = rendering
    for key, value in (params or {}).items():
        node, _, pkey = key.partition(".")
        if node not in specs or not pkey:
            raise SofError(f"parameter override '{key}' must be <node>.<param> with node one of {', '.join(specs)}")
        specs[node].overrides[pkey] = value
    out = [specs[n] for n in names]
    for spec in out:
        _check_keys(spec, spec.overrides, "overrides")
    check_consistency(robot, out)
    check_embodiment(out)
    return out


def checkpoint_antialias(checkpoint: str) -> bool | None:
    """Whether the checkpoint's training frames were antialiased (its config.yaml sim.antialias);
    None where that cannot be read (no checkpoint there: the nodes report it)."""
    from sof_ros.config import load_checkpoint_config

    try:
        return bool(load_checkpoint_config(checkpoint).sim.antialias) if checkpoint else None
    except SofError:
        return None


def check_embodiment(specs: list[NodeSpec]) -> None:
    """The checkpoint must have been trained for this arm (robot.name) and, when a simulator plays
    the robot, for its camera: refuse a mismatch before any node starts (flow2action refuses it too)."""
    from sof_ros.embodiment import check_embodiment as check

    eff = {s.name: s.effective() for s in specs}
    f2a = eff["sof_flow2action"]
    if ":" in f2a["agent.policy"]:
        return
    ck = f2a["agent.checkpoint"]
    found = check(ck, f2a["robot.name"])
    if found and "sof_sim_bridge" in eff:
        bridge = eff["sof_sim_bridge"]
        if not found.trained_on(f"{bridge['sim']}:{bridge['camera']}"):
            raise SofError(f"checkpoint {ck} was trained on camera {found}, but the sim bridge renders "
                           f"{bridge['sim']}:{bridge['camera']}; use a checkpoint trained on that camera")


def check_consistency(robot: str, specs: list[NodeSpec]) -> None:
    """Values that several nodes must agree on; a mismatch is an error, not a warning."""
    eff = {s.name: s.effective() for s in specs}
    f2a, pol, cam = eff["sof_flow2action"], eff["sof_policy"], eff["sof_camera"]
    rules = [
        ("sof_policy.agent.*", "sof_flow2action.agent.*",
         {k: v for k, v in pol.items() if k.startswith("agent.")} == {k: v for k, v in f2a.items() if k.startswith("agent.")}),
        ("sof_camera.image_topic", "sof_flow2action.image_topic", cam["image_topic"] == f2a["image_topic"] == pol["image_topic"]),
        ("sof_policy.tokens_topic", "sof_flow2action.tokens_topic", pol["tokens_topic"] == f2a["tokens_topic"]),
        ("sof_policy.flow_plan_topic", "sof_flow2action.flow_plan_topic", pol["flow_plan_topic"] == f2a["flow_plan_topic"]),
        ("sof_policy.action_chunk_topic", "sof_flow2action.action_chunk_topic", pol["action_chunk_topic"] == f2a["action_chunk_topic"]),
        ("sof_policy.fresh_plan_topic", "sof_flow2action.fresh_plan_topic", pol["fresh_plan_topic"] == f2a["fresh_plan_topic"]),
        ("sof_policy.plan_request_topic", "sof_flow2action.plan_request_topic", pol["plan_request_topic"] == f2a["plan_request_topic"]),
        ("sof_camera.base_frame", "sof_flow2action.robot.base_frame", cam["base_frame"] == f2a["robot.base_frame"]),
        ("sof_policy robot.name / gripper inputs", "sof_flow2action's",  # both feed the action head the same gripper
         all(pol[k] == f2a[k] for k in ("robot.name", "robot.gripper_joint_names", "robot.gripper_max_opening",
                                         "joint_states_topic", "gripper_state_topic"))),
    ]
    if "sof_sim_bridge" in eff:
        sim = eff["sof_sim_bridge"]
        rules += [
            ("sof_sim_bridge.rate_hz", "sof_flow2action.robot.control_rate_hz", sim["rate_hz"] == f2a["robot.control_rate_hz"]),
            ("sof_sim_bridge.twist_topic", "sof_flow2action.twist_topic", sim["twist_topic"] == f2a["twist_topic"]),
            ("sof_sim_bridge.gripper_topic", "sof_flow2action.gripper_topic", sim["gripper_topic"] == f2a["gripper_topic"]),
            ("sof_sim_bridge.robot.base_frame", "sof_flow2action.robot.base_frame", sim["robot.base_frame"] == f2a["robot.base_frame"]),
            ("sof_sim_bridge.robot.metres_per_action_unit", "sof_flow2action.robot.metres_per_action_unit",
             sim["robot.metres_per_action_unit"] == f2a["robot.metres_per_action_unit"]),
        ]
    else:
        rules.append(("sof_camera.rate_hz", "sof_flow2action.robot.control_rate_hz", cam["rate_hz"] == f2a["robot.control_rate_hz"]))
    bad = [f"{a} != {b}" for a, b, ok in rules if not ok]
    if bad:
        raise SofError("inconsistent parameters (they must agree): " + "; ".join(bad))


def launch_description_entries(robot: str, camera_source: str = "", checkpoint: str = "", task: str = "",
                               record: str = "", rviz: str | bool = False, sim: str = "") -> list[dict[str, Any]]:
    """kwargs for launch_ros.actions.Node, one dict per node (the launch files call this). Every
    process, RViz included, gets sof_ros.ros.dds's environment: DDS kept on this machine unless
    SOF_ROS_NETWORK=lan, and the Fast DDS profile for camera-sized frames."""
    from sof_ros.ros import dds

    env = dds.process_environment()
    entries = [dict(package=PACKAGE, executable=s.executable, name=s.name, output="screen",
                    parameters=[s.params_file, dict(s.overrides)], additional_env=dict(env))
               for s in plan(robot, camera_source, checkpoint, task, record, sim=sim)]
    if str(rviz).lower() in ("true", "1", "yes"):
        entries.append(dict(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                            arguments=["-d", str(rviz_config())], additional_env=dict(env)))
    return entries


def console_scripts() -> list[str]:
    """setup.py entry_points lines for the node executables."""
    return [f"{exe} = {module}:main" for _, module, exe in P.NODES.values()]


def launch_description(robot: str):
    """The LaunchDescription every launch/sof_<robot>.launch.py returns: the declared arguments,
    then the nodes of `plan()` for the values given. launch / launch_ros are imported here, only
    on a workstation that has them."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def nodes(context, *args, **kwargs):
        values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in LAUNCH_ARGUMENTS}
        chosen = values.pop("robot") or robot
        return [Node(**entry) for entry in launch_description_entries(chosen, **values)]

    args = [DeclareLaunchArgument(name, default_value=(default or robot) if name == "robot" else default,
                                  description=description)
            for name, default, description in LAUNCH_ARGUMENTS]
    return LaunchDescription(args + [OpaqueFunction(function=nodes)])
