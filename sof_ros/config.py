"""One config system for data, training, evaluation and the ROS nodes.

Every default lives in the dataclasses below; YAML files in `config/` override a subset.
`load_config("config/metaworld.yaml")` returns a `SofConfig`; unknown keys are errors so that
a typo in a YAML file never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

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
    """MetaWorld rendering and episode settings."""

    camera: str = "corner"
    width: int = 128
    height: int = 128
    max_steps: int = 200  # control steps per episode (MetaWorld's own limit is 500)
    render_shadows: bool = False  # off: ~45 fps at 128x128 on CPU instead of ~10


@dataclass
class CollectConfig:
    """What `sof-collect` records."""

    tasks: list[str] = field(default_factory=lambda: list(BENCHMARK_TASKS))
    episodes_per_task: int = 2
    seed: int = 0
    act_fraction: float = 0.2  # share of episodes marked as the action-labelled set D_act
    expert_noise: float = 0.1  # Gaussian noise on expert actions: varied, still mostly successful demos
    only_successful: bool = False


@dataclass
class FlowConfig:
    """Optical-flow extraction."""

    estimator: str = "dis"  # dis | farneback | raft
    dis_preset: str = "medium"  # ultrafast | fast | medium
    raft_weights: str = ""  # local .pth file; RAFT is never downloaded
    workers: int = 2


@dataclass
class SofConfig:
    """All sections; a YAML file sets any subset of them."""

    sim: SimConfig = field(default_factory=SimConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)


def _merge(obj: Any, overrides: dict, where: str) -> Any:
    if not isinstance(overrides, dict):
        raise SofError(f"config section '{where}' must be a mapping, got {type(overrides).__name__}")
    hints = get_type_hints(type(obj))
    known = {f.name for f in dataclasses.fields(obj)}
    for key, value in overrides.items():
        if key not in known:
            raise SofError(
                f"unknown config key '{where}.{key}'; known keys: {', '.join(sorted(known))}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{where}.{key}")
            continue
        hint = hints[key]
        if hint in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = hint(value)
        elif hint in (int, float, str, bool) and not isinstance(value, hint):
            raise SofError(f"config key '{where}.{key}' must be {hint.__name__}, got {value!r}")
        setattr(obj, key, value)
    return obj


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> SofConfig:
    """Defaults, then the YAML file (if any), then explicit overrides."""
    cfg = SofConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SofError(f"config file {path} does not exist; pass a YAML file from config/")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SofError(f"config file {path} is not valid YAML: {exc}") from None
        _merge(cfg, data, path.name)
    if overrides:
        _merge(cfg, overrides, "overrides")
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
