"""One graph description: the launch files (evaluated with launch / launch_ros stand-ins, as those
are not installed here) and sof-bringup start the same nodes with the same parameters."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

from sof_ros.errors import SofError
from sof_ros.ros import bringup, graph
from sof_ros.ros import params as P

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def launch_stubs(monkeypatch):
    """Minimal launch / launch_ros modules with the constructor signatures the launch files use."""
    launch = types.ModuleType("launch")
    actions = types.ModuleType("launch.actions")
    subs = types.ModuleType("launch.substitutions")
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")

    class LaunchDescription:
        def __init__(self, entities):
            self.entities = list(entities)

    class DeclareLaunchArgument:
        def __init__(self, name, default_value=None, description=""):
            self.name, self.default_value, self.description = name, default_value, description

    class OpaqueFunction:
        def __init__(self, function, args=None, kwargs=None):
            self.function = function

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context.launch_configurations[self.name]

    class Node(_Recorder):
        pass

    launch.LaunchDescription = LaunchDescription
    actions.DeclareLaunchArgument, actions.OpaqueFunction = DeclareLaunchArgument, OpaqueFunction
    subs.LaunchConfiguration = LaunchConfiguration
    ros_actions.Node = Node
    launch.actions, launch.substitutions, launch_ros.actions = actions, subs, ros_actions
    for name, mod in {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
                      "launch_ros": launch_ros, "launch_ros.actions": ros_actions}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(DeclareLaunchArgument=DeclareLaunchArgument, OpaqueFunction=OpaqueFunction)


def evaluate_launch(stubs, robot: str, **args) -> tuple[list[dict], dict]:
    """Run launch/sof_<robot>.launch.py: declared arguments and the Node kwargs it produces."""
    path = ROOT / "launch" / f"sof_{robot}.launch.py"
    spec = importlib.util.spec_from_file_location(f"sof_{robot}_launch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    decls = {e.name: e for e in ld.entities if isinstance(e, stubs.DeclareLaunchArgument)}
    context = types.SimpleNamespace(launch_configurations={n: args.get(n, d.default_value) for n, d in decls.items()})
    nodes = []
    for e in ld.entities:
        if isinstance(e, stubs.OpaqueFunction):
            nodes += e.function(context)
    return [n.kwargs for n in nodes], decls


def launch_view(entries: list[dict]) -> dict:
    out = {}
    for kw in entries:
        if kw["package"] != graph.PACKAGE:
            continue
        pfile, overrides = kw["parameters"]
        params = {**graph.load_yaml_params(pfile).get(kw["name"], {}), **P.flatten(P.unflatten(overrides))}
        out[kw["name"]] = (kw["executable"], pfile, params)
    return out


def bringup_view(argv: list[str], tmp_path: Path) -> dict:
    ns = bringup.build_parser().parse_args(argv)
    specs = bringup.make_plan(ns)
    ofile = bringup.write_overrides(specs, tmp_path)
    out = {}
    for spec, (name, cmd) in zip(specs, bringup.process_commands(specs, ofile)):
        assert cmd[:3] == [sys.executable, "-m", spec.module]
        i = cmd.index("--ros-args")
        assert cmd[i + 1:i + 3] == ["-r", f"__node:={name}"]
        files = [cmd[j + 1] for j, a in enumerate(cmd) if a == "--params-file"]
        assert files == [spec.params_file, str(ofile)]
        params = {}
        for f in files:  # later files override earlier ones, as in rcl
            params.update(graph.load_yaml_params(f).get(name, {}))
        out[name] = (P.NODES[name][2], files[0], params)  # module -> its console script
    return out


CASES = [
    ("sim", {}, []),
    ("panda", {}, []),
    ("sawyer", {}, []),
    ("sim", {"camera_source": "sim", "checkpoint": "/tmp/ck", "task": "door-open", "record": "/tmp/r.mcap"},
     ["--camera-source", "sim", "--checkpoint", "/tmp/ck", "--task", "door-open", "--record", "/tmp/r.mcap"]),
    ("panda", {"camera_source": "topic", "checkpoint": "/tmp/ck", "record": "/tmp/p.mcap"},
     ["--camera-source", "topic", "--checkpoint", "/tmp/ck", "--record", "/tmp/p.mcap"]),
]


@pytest.mark.parametrize("robot,largs,bargs", CASES)
def test_launch_and_bringup_start_the_same_nodes_and_parameters(launch_stubs, tmp_path, robot, largs, bargs):
    entries, decls = evaluate_launch(launch_stubs, robot, **largs)
    assert decls["robot"].default_value == robot
    assert {"robot", "camera_source", "checkpoint", "rviz"} <= set(decls)
    lv = launch_view(entries)
    bv = bringup_view([robot, *bargs], tmp_path)
    assert list(lv) == list(bv) == graph.NODE_ORDER[robot] + (["sof_recorder"] if "record" in largs else [])
    assert lv == bv
    for name, (exe, pfile, params) in lv.items():
        assert Path(pfile) == ROOT / "config" / graph.ROBOTS[robot]
        assert exe == P.NODES[name][2]
        if name in ("sof_policy", "sof_flow2action"):
            assert params["agent.checkpoint"] == largs.get("checkpoint", params["agent.checkpoint"])
    if "camera_source" in largs:
        assert lv["sof_camera"][2]["source"] == largs["camera_source"]


def test_rviz_argument_adds_rviz_with_the_shipped_config(launch_stubs):
    entries, _ = evaluate_launch(launch_stubs, "sim", rviz="true")
    rviz = [e for e in entries if e["package"] == "rviz2"]
    assert len(rviz) == 1 and rviz[0]["arguments"] == ["-d", str(ROOT / "config" / "sof.rviz")]
    cfg = yaml.safe_load((ROOT / "config" / "sof.rviz").read_text())
    topics = {d["Topic"]["Value"]: d["Class"] for d in cfg["Visualization Manager"]["Displays"] if "Topic" in d}
    assert topics[P.Topics.IMAGE] == topics[P.Topics.PLAN_IMAGE] == "rviz_default_plugins/Image"
    assert topics[P.Topics.MARKERS] == "rviz_default_plugins/MarkerArray"


@pytest.mark.parametrize("robot", list(graph.ROBOTS))
def test_yaml_files_are_valid_ros_parameter_files(robot):
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context

    path = graph.params_file(robot)
    ctx = Context()
    try:  # rcl's own YAML parser (homogeneous arrays, ros__parameters sections) must accept the file
        rclpy.init(context=ctx, args=["test", "--ros-args", "--params-file", str(path)])
    finally:
        rclpy.try_shutdown(context=ctx)
    assert set(graph.NODE_ORDER[robot]) <= set(graph.load_yaml_params(path))
    graph.plan(robot)  # every key known, every type right, cross-node values consistent


def test_every_node_has_a_console_script_and_a_main():
    for name, (cls, module, exe) in P.NODES.items():
        mod = importlib.import_module(module)
        assert callable(mod.main), module
        assert getattr(mod, bringup.NODE_CLASSES[name]).PARAMS is cls
    assert "sof-sim-bridge = sof_ros.ros.sim_bridge_node:main" in graph.console_scripts()


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(SofError, match="unknown parameter 'sof_camera.fps'"):
        graph.plan("sim", params={"sof_camera.fps": 3})
    with pytest.raises(SofError, match="must be float"):
        graph.plan("sim", params={"sof_sim_bridge.rate_hz": 20})
    with pytest.raises(SofError, match="sof_sim_bridge.rate_hz != sof_flow2action.robot.control_rate_hz"):
        graph.plan("sim", params={"sof_sim_bridge.rate_hz": 20.0})
    specs = graph.plan("sim", params={"sof_sim_bridge.rate_hz": 20.0, "sof_flow2action.robot.control_rate_hz": 20.0})
    assert specs[0].effective()["rate_hz"] == 20.0
    with pytest.raises(SofError, match="only applies to robot sim"):
        graph.plan("panda", task="door-open")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sof_camera:\n  params: {}\n")
    with pytest.raises(SofError, match="ros__parameters"):
        graph.load_yaml_params(bad)
    with pytest.raises(SystemExit) as exc:
        bringup.main(["sim", "--param", "sof_camera.nope=1", "--dry-run"])
    assert exc.value.code == 2


def test_bringup_dry_run_prints_the_plan(capsys):
    assert bringup.main(["sim", "--task", "door-open", "--dry-run"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["instruction"] == "open the door"
    assert [n["name"] for n in out["nodes"]] == graph.NODE_ORDER["sim"]


def test_fastdds_profile_for_large_frames_unless_the_user_chose_one(tmp_path):
    from sof_ros.ros import dds

    env = {}
    assert dds.configure(env) == env and "<segment_size>" in open(env["FASTDDS_DEFAULT_PROFILES_FILE"]).read()
    assert dds.environment({"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}) == {}
    assert dds.environment({"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}) == {}
    assert dds.environment({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) == {}
    assert dds.environment({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"})


@pytest.mark.parametrize("robot", ["panda", "fr3", "sawyer"])
def test_real_arm_configs_ship_no_simulation_checkpoint(robot):
    """The checkpoints in models/ were trained in simulation: a real arm's graph names none, and
    starting it without one says what to set; the Panda's simulation mode brings the LIBERO one."""
    from sof_ros.ros.bringup import check_checkpoint

    specs = graph.plan(robot)
    assert {s.effective()["agent.checkpoint"] for s in specs if s.name in ("sof_policy", "sof_flow2action")} == {""}
    with pytest.raises(SofError, match="agent.checkpoint is empty: set it to a checkpoint trained on this arm and camera"):
        check_checkpoint(specs)
    if robot == "panda":
        sim = {s.name: s.effective() for s in graph.plan("panda", sim="libero")}
        assert sim["sof_flow2action"]["agent.checkpoint"].endswith("models/sof_libero")


def test_the_sim_bridge_renders_as_the_checkpoint_was_trained_and_sends_masks_in_simulation():
    """models/sof_metaworld_v2 learned from frames without antialiasing: a bridge rendering them
    antialiased fed Stage 2 other images, and the graph's plans differed from sof-eval's."""
    bridge = lambda specs: next(s for s in specs if s.name == "sof_sim_bridge").effective()  # noqa: E731
    assert bridge(graph.plan("sim", checkpoint="models/sof_metaworld_v2"))["antialias"] is False
    assert bridge(graph.plan("sim", checkpoint="models/sof_metaworld"))["antialias"] is True
    forced = graph.plan("sim", checkpoint="models/sof_metaworld_v2", params={"sof_sim_bridge.antialias": True})
    assert bridge(forced)["antialias"] is True  # an explicit choice wins
    for specs in (graph.plan("sim"), graph.plan("panda", sim="libero")):
        eff = {s.name: s.effective() for s in specs}
        for name in ("object_mask", "robot_mask"):
            assert eff["sof_flow2action"][f"{name}_topic"] == eff["sof_sim_bridge"][f"{name}_topic"] != ""
    # v2 learned from the three corner cameras' videos: the bridge may render any of them, not v1's others
    graph.plan("sim", checkpoint="models/sof_metaworld_v2", params={"sof_sim_bridge.camera": "corner3"})
    with pytest.raises(SofError, match="trained on camera metaworld:corner 128x128, but the sim bridge renders metaworld:corner3"):
        graph.plan("sim", checkpoint="models/sof_metaworld", params={"sof_sim_bridge.camera": "corner3"})
    for robot in ("panda", "fr3", "sawyer"):  # a real arm has no segmentation unless the lab adds one
        f2a = next(s for s in graph.plan(robot) if s.name == "sof_flow2action").effective()
        assert f2a["object_mask_topic"] == f2a["robot_mask_topic"] == ""
