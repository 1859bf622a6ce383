"""Oracle flow plans: simulator ground-truth flow of the scripted expert's future (privileged).

The oracle row runs the learning-free solver on these instead of predicted plans, so a results
table separates what the solver loses from what the plan loses. From the current state the expert
runs `fields * frames_per_step` control steps on a copy of the simulator state (`MetaWorldArm.
expert_future`, restored afterwards); field k is the ground-truth flow (`sof_ros.flow.gt_flow`:
every visible surface point carried with its body) from the frame of step k*f to that of step
(k+1)*f, area-averaged over the pixels where it is defined (visible in both frames) onto the
working grid and rescaled to working pixels. Cells with no such pixel are NaN.
"""
from __future__ import annotations

import numpy as np

from sof_ros.errors import SofError
from sof_ros.flow.gt_flow import gt_flow


def pool_flow(flow: np.ndarray, valid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 2) image-px flow defined where `valid` -> (h, w, 2) working-px flow, the mean over each
    cell's valid pixels (NaN for a cell without any)."""
    import cv2

    from sof_ros.geometry import resize_flow

    h, w = size
    wgt = cv2.resize(valid.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    num = resize_flow(np.where(valid[..., None], flow, 0.0).astype(np.float32), (h, w))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / wgt[..., None]
    out[wgt <= 0] = np.nan
    return out.astype(np.float32)


def expert_flow_plan(arm, depth0: np.ndarray, seg0: np.ndarray, fields: int = 8, frames_per_step: int = 1,
                     flow_res: int | tuple[int, int] = 32) -> np.ndarray:
    """(fields, h, w, 2) ground-truth flow plan of the expert's next fields*frames_per_step steps
    from the arm's current state, whose rendered depth and segmentation are depth0 and seg0."""
    if fields < 1 or frames_per_step < 1:
        raise SofError(f"an oracle plan needs fields >= 1 and frames_per_step >= 1, got {fields}, {frames_per_step}")
    h, w = (int(flow_res), int(flow_res)) if np.isscalar(flow_res) else (int(flow_res[0]), int(flow_res[1]))
    cam_pose0, body_pos0 = arm.cam_pose(), arm.data.xpos.copy()
    body_mat0 = arm.data.xmat.reshape(-1, 3, 3).copy()
    fut = arm.expert_future(fields * frames_per_step, every=frames_per_step)
    K = arm.intrinsics()
    geom_body = arm.geom_body_ids()
    depth = [depth0] + list(fut.depth)
    seg = [seg0] + list(fut.seg)
    cams = [cam_pose0] + list(fut.cam_pose)
    bpos = [body_pos0] + list(fut.body_pos)
    bmat = [body_mat0] + list(fut.body_mat)
    out = np.empty((fields, h, w, 2), np.float32)
    for k in range(fields):
        f, valid = gt_flow(depth[k], seg[k], K, cams[k], cams[k + 1], bpos[k], bmat[k], bpos[k + 1], bmat[k + 1],
                           geom_body, depth1=depth[k + 1])
        out[k] = pool_flow(f, valid, (h, w))
    return out
