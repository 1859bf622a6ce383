"""The ament_python package installs what a workstation needs: launch files, configs, the shipped
checkpoint (as regular files, which colcon requires), and a format-3 package.xml."""
import runpy
import xml.etree.ElementTree as ET
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parents[1]


def setup_kwargs(monkeypatch):
    seen = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: seen.update(kw))
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"))
    return seen


def test_data_files_are_regular_files_and_cover_launch_config_models(monkeypatch):
    kw = setup_kwargs(monkeypatch)
    installed = {}
    for dest, files in kw["data_files"]:
        for f in files:
            assert (ROOT / f).is_file(), f"data_files lists {f}, which is not a regular file"
            installed[f] = dest
    for launch in ("sof_panda", "sof_sawyer", "sof_sim"):
        assert installed.get(f"launch/{launch}.launch.py") == "share/sof_ros/launch"
    for cfg in ("config/metaworld.yaml", "config/panda.yaml", "config/sawyer.yaml", "config/sim.yaml",
                "config/sof.rviz"):
        assert installed.get(cfg) == "share/sof_ros/config", cfg
    for name in ("skill.pt", "policy.pt", "f2a.pt", "config.yaml", "instructions.pt"):
        assert installed.get(f"models/sof_metaworld/{name}") == "share/sof_ros/models/sof_metaworld", name
    for name in ("skill.pt", "policy.pt", "config.yaml", "instructions.pt"):  # Stages 1-2 for the learning-free row
        assert installed.get(f"models/sof_metaworld_v2/{name}") == "share/sof_ros/models/sof_metaworld_v2", name
    assert not any(f.endswith(".ckpt") for f in installed)


def test_console_scripts_resolve(monkeypatch):
    import importlib

    kw = setup_kwargs(monkeypatch)
    for entry in kw["entry_points"]["console_scripts"]:
        name, target = (s.strip() for s in entry.split("="))
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), entry


def test_launch_executables_are_installed(monkeypatch):
    """The launch files start nodes by executable name: each must be a console script."""
    from sof_ros.ros import graph

    scripts = set(setup_kwargs(monkeypatch)["entry_points"]["console_scripts"])
    assert set(graph.console_scripts()) <= scripts


def test_package_xml_format_3():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "sof_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "visualization_msgs"} <= deps


# ROS packages imported by module name (ament_python / rosidl Python packages share the package name)
_ROS_MODULE_SUFFIXES = ("_msgs", "_interfaces", "_srvs")
_ROS_MODULES = {"rclpy", "tf2_ros", "ament_index_python", "launch", "launch_ros"}
_OPTIONAL = {"moveit": "moveit_py, only with use_moveit_py (a clear error names the package when missing)"}


def test_package_xml_declares_every_ros_package_the_code_imports():
    """rosdep installs exec_depends: a ROS package imported anywhere in sof_ros/ or launch/ (at module
    level or lazily) must be one, or an optional dependency documented here."""
    import ast

    imported = set()
    for path in list((ROOT / "sof_ros").rglob("*.py")) + list((ROOT / "launch").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top in _ROS_MODULES or top.endswith(_ROS_MODULE_SUFFIXES):
                    imported.add(top)
    deps = {e.text for e in ET.parse(ROOT / "package.xml").getroot().findall("exec_depend")}
    assert {"tf2_ros", "moveit_msgs", "rcl_interfaces", "builtin_interfaces", "ament_index_python"} <= imported
    assert imported - set(_OPTIONAL) <= deps, sorted(imported - set(_OPTIONAL) - deps)


def test_results_record_the_console_command_of_a_module_run(monkeypatch):
    """A benchmark run as `python -m sof_ros.bench.cli transfer ...` records `sof-bench transfer ...`:
    the command a reader can paste, not the module file's name."""
    import sys
    import types

    from sof_ros.bench.meta import command_line

    monkeypatch.setattr(sys, "argv", ["/somewhere/sof_ros/bench/cli.py", "transfer", "--episodes", "8"])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", types.SimpleNamespace(name="sof_ros.bench.cli"), raising=False)
    assert command_line() == "sof-bench transfer --episodes 8"
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None, raising=False)
    assert command_line() == "cli.py transfer --episodes 8"
