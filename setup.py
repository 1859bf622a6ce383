"""ament_python package definition; also installs with plain pip into a venv."""
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sof_ros"


def model_files():
    """Shipped checkpoints keep their folder layout under share/sof_ros/models (weights, configs,
    metrics, plots); resume state (*.ckpt) is not installed."""
    out = {}
    for path in sorted(glob("models/**/*", recursive=True)):
        if os.path.isfile(path) and not path.endswith(".ckpt"):
            out.setdefault(os.path.join("share", PACKAGE, os.path.dirname(path)), []).append(path)
    return sorted(out.items())

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ] + model_files(),
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="sof_ros maintainers",
    maintainer_email="sof-ros@example.org",
    description="SOF: learning manipulation skills from action-free videos, as ROS 2 nodes.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "sof-collect = sof_ros.data.collect:main",
            "sof-import-videos = sof_ros.data.video_import:main",
            "sof-import-lerobot = sof_ros.data.lerobot_import:main",
            "sof-import-mcap = sof_ros.data.mcap_import:main",
            "sof-flow = sof_ros.flow.extract:main",
            "sof-bench = sof_ros.bench.cli:main",
            "sof-train = sof_ros.train:main",
            "sof-eval = sof_ros.eval:main",
            "sof-demo = sof_ros.demo:main",
            "sof-bringup = sof_ros.ros.bringup:main",
            # the node executables the launch files start (sof_ros.ros.graph.console_scripts())
            "sof-sim-bridge = sof_ros.ros.sim_bridge_node:main",
            "sof-camera-node = sof_ros.ros.camera_node:main",
            "sof-policy-node = sof_ros.ros.policy_node:main",
            "sof-flow2action-node = sof_ros.ros.flow2action_node:main",
            "sof-recorder-node = sof_ros.ros.recorder_node:main",
        ],
    },
)
