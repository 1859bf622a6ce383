"""Optical-flow estimators behind one callable interface.

`est(frame0, frame1)` takes two (H, W, 3) uint8 RGB frames and returns (H, W, 2) float32 flow in
pixels (x then y) from frame0 to frame1. DIS and Farneback are OpenCV and run anywhere on CPU;
RAFT needs torchvision and a weights file the user downloaded themselves: it is never fetched.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sof_ros.errors import SofError

DIS_PRESETS = ("ultrafast", "fast", "medium")


def _gray(rgb: np.ndarray) -> np.ndarray:
    import cv2

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SofError(f"flow estimators take (H, W, 3) uint8 RGB frames, got {rgb.shape} {rgb.dtype}")
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def _check_pair(frame0: np.ndarray, frame1: np.ndarray) -> None:
    if np.shape(frame0) != np.shape(frame1):
        raise SofError(f"flow needs two frames of the same size, got {np.shape(frame0)} and {np.shape(frame1)}")


class FlowEstimator:
    """Interface: `name` (the dataset key `flow/<name>`) and `__call__(frame0, frame1) -> flow`."""

    name: str = "flow"

    def __call__(self, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class DISFlow(FlowEstimator):
    """OpenCV Dense Inverse Search: fast coarse-to-fine patch flow with variational refinement.

    The medium preset is called plain `dis` (the default the learner reads); the others are
    `dis_fast` / `dis_ultrafast` so flows from different presets never share a dataset key.
    """

    def __init__(self, preset: str = "medium"):
        import cv2

        if preset not in DIS_PRESETS:
            raise SofError(f"unknown DIS preset '{preset}'; choose one of: {', '.join(DIS_PRESETS)}")
        self.preset = preset
        self.name = "dis" if preset == "medium" else f"dis_{preset}"
        code = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[preset]
        self._dis = cv2.DISOpticalFlow_create(code)

    def __call__(self, frame0, frame1):
        _check_pair(frame0, frame1)
        return self._dis.calc(_gray(frame0), _gray(frame1), None).astype(np.float32, copy=False)


class FarnebackFlow(FlowEstimator):
    """OpenCV Farneback polynomial-expansion flow: a classic dense baseline with no learned parts."""

    name = "farneback"

    def __init__(self, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15, iterations: int = 3,
                 poly_n: int = 5, poly_sigma: float = 1.2):
        self.params = (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, 0)

    def __call__(self, frame0, frame1):
        import cv2

        _check_pair(frame0, frame1)
        flow = cv2.calcOpticalFlowFarneback(_gray(frame0), _gray(frame1), None, *self.params)
        return flow.astype(np.float32, copy=False)


class RAFTFlow(FlowEstimator):
    """torchvision RAFT (large or small, detected from the weights) loaded from a local file only.

    Get weights once on a machine with internet, e.g. `torchvision.models.optical_flow.Raft_Large_Weights`
    downloads `raft_large_C_T_SKHT_V2-ff5fadd5.pth`; copy that .pth here and pass its path.
    """

    name = "raft"

    def __init__(self, weights_path: str | Path = "", device: str = "cpu", iterations: int = 12):
        weights_path = Path(weights_path) if weights_path else None
        if weights_path is None or not weights_path.is_file():
            raise SofError(
                f"RAFT weights file {str(weights_path) if weights_path else '(none given)'} not found; RAFT is "
                "never downloaded: copy a torchvision RAFT .pth (e.g. raft_large_C_T_SKHT_V2-ff5fadd5.pth) "
                "to this machine and pass --raft-weights PATH, or use --estimator dis"
            )
        try:
            from torchvision.models.optical_flow import raft_large, raft_small
        except ImportError:
            raise SofError("RAFT needs torchvision, which is not installed; `pip install torchvision` matching "
                           "your torch build, or use --estimator dis / farneback") from None
        import torch

        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise SofError(f"cannot read RAFT weights {weights_path} ({exc}); pass a torchvision RAFT .pth") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model = None
        for build in (raft_large, raft_small):
            candidate = build(weights=None)
            try:
                candidate.load_state_dict(state, strict=True)
            except (RuntimeError, TypeError, AttributeError):
                continue
            model = candidate
            break
        if model is None:
            raise SofError(f"{weights_path} does not hold torchvision raft_large or raft_small weights")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.iterations = int(iterations)
        self._torch = torch

    def __call__(self, frame0, frame1):
        torch = self._torch
        _check_pair(frame0, frame1)
        h, w = np.shape(frame0)[:2]
        ph, pw = (-h) % 8, (-w) % 8  # RAFT needs sides divisible by 8: replicate-pad, then crop

        def prep(frame):
            x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
            return x.to(self.device)

        with torch.inference_mode():
            flows = self.model(prep(frame0), prep(frame1), num_flow_updates=self.iterations)
        return flows[-1][0, :, :h, :w].permute(1, 2, 0).cpu().numpy().astype(np.float32)


ESTIMATORS = ("dis", "dis_fast", "dis_ultrafast", "farneback", "raft")


def make_estimator(name: str, **opts) -> FlowEstimator:
    """Build an estimator by name; `make_estimator(est.name)` rebuilds the same one.

    Options: dis: preset; farneback: OpenCV parameters; raft: weights_path (or raft_weights), device.
    """
    key = str(name).lower()
    if key == "dis":
        return DISFlow(opts.get("preset") or "medium")
    if key.startswith("dis_") and key[4:] in DIS_PRESETS:
        if opts.get("preset") not in (None, "", key[4:]):
            raise SofError(f"estimator '{name}' already fixes the DIS preset; drop --preset {opts['preset']}")
        return DISFlow(key[4:])
    if key == "farneback":
        names = ("pyr_scale", "levels", "winsize", "iterations", "poly_n", "poly_sigma")
        return FarnebackFlow(**{k: v for k, v in opts.items() if k in names})
    if key == "raft":
        weights = opts.get("weights_path") or opts.get("raft_weights") or ""
        return RAFTFlow(weights, device=opts.get("device", "cpu"))
    raise SofError(f"unknown flow estimator '{name}'; choose one of: {', '.join(ESTIMATORS)}")
