"""Learning-free Flow2Action: a flow plan plus depth -> end-effector actions (AVDC-style).

A flow plan is T per-step optical-flow fields (T, h, w, 2) predicted from the current frame;
flow[k] maps frame k to frame k+1 and is measured in pixels of the h x w working grid. Working
cell j covers image pixels [j*s, (j+1)*s) (area downsampling, s = W/w), so image pixel p sits at
working coordinate (p + 0.5)/s - 0.5 and a working-pixel displacement is s image pixels.

`GeometricFlow2Action.act` recovers the 3-D motion the plan implies, needing no action labels:

1. Track: chain the flows (bilinear sampling) from the pixels of the plan's first frame.
2. Gripper points: pixels within `ee_radius_px` of the projected tool centre point (TCP) whose
   depth lies within `depth_tol` m of the TCP's depth (the fingers and the hand around it).
3. Per plan step k, a translation-only estimate: the robust 2-D displacement of the gripper
   points, lifted at the TCP's depth (motion parallel to the image plane). A single camera
   sees motion along its viewing ray only as a change of scale, which a hand a dozen pixels
   wide does not reveal at flow resolution (measured: no correlation in MetaWorld), so depth
   is held unless the scene says otherwise: the visibility bound keeps the TCP in front of the
   static surface the plan moves it onto.
4. Contact (AVDC): points outside the gripper set, within `contact_radius` m of the TCP, not
   above the hand (the arm) and moving with the gripper form an object the gripper drives. With
   at least `pnp_min_points` of them spread over `pnp_min_extent` m, `cv2.solvePnPRansac` fits
   the object's rigid motion per step and the TCP target is that motion applied to the TCP, which
   recovers motion along the viewing ray (a door swinging about its hinge, a drawer sliding).
5. Action: clip(gain * (target[s+1] - ee_pos) / 0.01, -1, 1) for plan step s; MetaWorld moves
   the mocap by action * 1 cm per control step, so gain 1 asks to reach the next target now.

Gripper heuristic (documented choice): the gripper closes (+1) when the plan shows an object
moving with the gripper (step 4: the plan carries, pushes or pulls something) and otherwise
keeps its last command, starting from `default_grip` (+1: a closed hand is the rigid pusher
MetaWorld's pressing and pulling experts use; pass -1 for grasp-first tasks).

Fail-safe: malformed inputs a caller can fix raise SofError; an empty or non-finite plan, no
valid depth, a TCP out of view or too few gripper points give a zero motion action (the gripper
holds its command) and `last_reason` says why. Actions are always finite and in [-1, 1].
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from sof_ros.errors import SofError
from sof_ros.geometry import backproject, camera_to_world, project, resize_flow, world_to_camera

ACTION_SCALE_M = 0.01  # MetaWorld: the mocap moves action * 1 cm per control step


@dataclass
class PlanSolution:
    """Geometry recovered from one flow plan, starting at plan step `start`."""

    start: int  # plan step the tracks start at (the frame depth/ee_pos came from)
    targets: np.ndarray  # (T - start + 1, 3) world TCP targets; targets[0] = ee_pos at `start`
    grip: float | None  # +1 when the plan shows an object moving with the gripper, else None
    reason: str
    ok: bool


# --- small geometry helpers ---------------------------------------------------------------
def sample_flow(flow: np.ndarray, pts: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Bilinearly sample one working-resolution flow field (h, w, 2) at image-pixel points (N, 2);
    returns image-pixel displacements (N, 2) (NaN where the field is non-finite)."""
    h, w = flow.shape[:2]
    x = np.clip((pts[:, 0] + 0.5) / scale[0] - 0.5, 0.0, w - 1.0)
    y = np.clip((pts[:, 1] + 0.5) / scale[1] - 0.5, 0.0, h - 1.0)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    ax = (x - x0)[:, None]
    ay = (y - y0)[:, None]
    v = (flow[y0, x0] * (1 - ax) * (1 - ay) + flow[y0, x1] * ax * (1 - ay)
         + flow[y1, x0] * (1 - ax) * ay + flow[y1, x1] * ax * ay)
    return v * scale[None, :]


def chain_tracks(flows: np.ndarray, pts: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Track image-pixel points through consecutive flows: (T, h, w, 2), (N, 2) -> (T+1, N, 2).
    A point that samples a non-finite flow value is NaN from then on."""
    out = np.empty((len(flows) + 1, len(pts), 2), dtype=np.float64)
    p = pts.astype(np.float64).copy()
    out[0] = p
    for k, f in enumerate(flows):
        good = np.all(np.isfinite(p), axis=1)
        d = np.full_like(p, np.nan)
        if good.any():
            d[good] = sample_flow(f, p[good], scale)
        p = p + d
        out[k + 1] = p
    return out


def dis_flow_plan(frames: np.ndarray, flow_res: int | tuple[int, int] = 32, preset: str = "medium") -> np.ndarray:
    """An oracle/reference flow plan from T+1 rendered RGB (or gray) frames: DIS flow
    (`sof_ros.flow.estimators`) between successive frames, area-downsampled to the working grid and
    rescaled to working pixels (`sof_ros.geometry.resize_flow`). Returns (T, h, w, 2) float32."""
    from sof_ros.flow.estimators import DISFlow

    frames = np.asarray(frames)
    if frames.ndim not in (3, 4) or len(frames) < 2:
        raise SofError(f"need at least 2 frames (T+1, H, W[, 3]) to make a flow plan, got {frames.shape}")
    dis = DISFlow(preset)
    rgb = frames.astype(np.uint8)
    if rgb.ndim == 3:  # gray frames: equal channels convert back to the same gray
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    return resize_flow(np.stack([dis(rgb[k], rgb[k + 1]) for k in range(len(rgb) - 1)]), flow_res)


# --- the solver ---------------------------------------------------------------------------
class GeometricFlow2Action:
    """Flow plan + depth + camera model + TCP position -> MetaWorld actions [dx, dy, dz, grip].

    Parameters (image pixels are pixels of the depth image, not of the flow grid):
      gain: action = clip(gain * (target - ee_pos) / 0.01 m, -1, 1).
      ee_radius_px: radius around the projected TCP from which gripper points are taken.
      min_points: fewer valid gripper points than this -> zero action (fail safe).
      depth_tol: m; a gripper point's depth must be within this of the TCP's depth.
      motion_quantile: the gripper's 2-D displacement per step is the median over the gripper
        points moving at least this quantile of their displacements (coarse flow blends the thin
        fingers with the static background, which biases a plain median towards zero).
      flow_gain: tracked displacements are multiplied by this before lifting to 3-D. Flow
        computed on small renders (DIS at 128x128, area-pooled to 32x32) under-reports the thin,
        textureless gripper's motion (aperture problem); measured in MetaWorld: ~0.45x of the true
        vertical and ~0.7x of the true horizontal image motion, so 1.5-2 suits such plans.
      visibility_margin: m; if set, the TCP target is kept this far in front of a static
        surface (clearly in front of the hand) that the plan moves it onto. Off by default: the
        cue rarely binds and coarse flow can call parts of the arm static.
      contact_radius: m; object points are searched within this distance of the TCP.
      arm_margin: m; points higher than the TCP by more than this are the arm, not an object.
      min_motion_px: image px over the plan below which a point counts as static.
      use_pnp: fit the object's rigid motion with solvePnPRansac when in contact.
      pnp_min_points, pnp_min_extent: how much object is needed for the rigid fit.
      pnp_reproj_px: RANSAC inlier threshold in image pixels.
      default_grip: the gripper command until the plan shows an object moving with the gripper.
      max_plan_steps: plans longer than this raise SofError (a malformed-input guard).
    """

    def __init__(self, gain: float = 1.0, ee_radius_px: float = 8.0, min_points: int = 6,
                 depth_tol: float = 0.06, motion_quantile: float = 0.5, flow_gain: float = 1.0,
                 visibility_margin: float | None = None, contact_radius: float = 0.08,
                 arm_margin: float = 0.02, min_motion_px: float = 0.75, use_pnp: bool = True,
                 pnp_min_points: int = 12, pnp_min_extent: float = 0.05, pnp_reproj_px: float = 1.5,
                 default_grip: float = 1.0, max_plan_steps: int = 1024):
        if not (np.isfinite(gain) and gain > 0):
            raise SofError(f"gain must be a positive number, got {gain}")
        if ee_radius_px <= 0 or min_points < 1 or depth_tol <= 0:
            raise SofError("ee_radius_px and depth_tol must be positive and min_points at least 1")
        if not 0.0 <= motion_quantile < 1.0:
            raise SofError(f"motion_quantile must be in [0, 1), got {motion_quantile}")
        if not -1.0 <= default_grip <= 1.0:
            raise SofError(f"default_grip must be in [-1, 1], got {default_grip}")
        self.gain = float(gain)
        self.ee_radius_px = float(ee_radius_px)
        self.min_points = int(min_points)
        self.depth_tol = float(depth_tol)
        self.motion_quantile = float(motion_quantile)
        if not (np.isfinite(flow_gain) and flow_gain > 0):
            raise SofError(f"flow_gain must be a positive number, got {flow_gain}")
        self.flow_gain = float(flow_gain)
        self.visibility_margin = visibility_margin
        self.contact_radius = float(contact_radius)
        self.arm_margin = float(arm_margin)
        self.min_motion_px = float(min_motion_px)
        self.use_pnp = bool(use_pnp)
        self.pnp_min_points = int(pnp_min_points)
        self.pnp_min_extent = float(pnp_min_extent)
        self.pnp_reproj_px = float(pnp_reproj_px)
        self.default_grip = float(default_grip)
        self.max_plan_steps = int(max_plan_steps)
        self.last_reason = "no action yet"
        self.last_solution: PlanSolution | None = None
        self._grip = self.default_grip
        self._cache_key: bytes | None = None

    def reset(self) -> None:
        """Forget the cached plan and the gripper state (call at the start of an episode)."""
        self._grip = self.default_grip
        self._cache_key = None
        self.last_solution = None
        self.last_reason = "reset"

    # --- input checks (SofError for what a caller can fix) -----------------------------------
    def _check(self, flow_plan, depth, intrinsics, cam_pose, ee_pos, step_in_plan, seg):
        if flow_plan is None:
            raise SofError("flow_plan is missing; pass a (T, h, w, 2) array of per-step flow")
        flow = np.asarray(flow_plan)
        if flow.ndim != 4 or flow.shape[-1] != 2:
            raise SofError(f"flow_plan must be (T, h, w, 2) per-step flow, got shape {flow.shape}")
        if flow.shape[0] > self.max_plan_steps:
            raise SofError(f"flow_plan has {flow.shape[0]} steps, more than max_plan_steps={self.max_plan_steps}")
        if not np.issubdtype(flow.dtype, np.number):
            raise SofError(f"flow_plan must be numeric, got dtype {flow.dtype}")
        if depth is None:
            raise SofError("depth is missing; the learning-free Flow2Action needs a metric depth image")
        depth = np.asarray(depth)
        if depth.ndim != 2 or min(depth.shape) < 2 or not np.issubdtype(depth.dtype, np.number):
            raise SofError(f"depth must be an (H, W) array of metres, got shape {depth.shape} {depth.dtype}")
        if intrinsics is None:
            raise SofError("camera intrinsics are missing; pass the 3x3 pinhole matrix K")
        K = np.asarray(intrinsics, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise SofError(f"intrinsics must be a finite 3x3 K with positive focal lengths, got {intrinsics!r}")
        if cam_pose is None:
            raise SofError("cam_pose is missing; pass the 4x4 camera-to-world pose (OpenCV axes)")
        P = np.asarray(cam_pose, dtype=np.float64)
        if P.shape != (4, 4) or not np.all(np.isfinite(P)):
            raise SofError(f"cam_pose must be a finite 4x4 camera-to-world matrix, got shape {P.shape}")
        R = P[:3, :3]
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
            raise SofError("cam_pose's rotation block is not a rotation matrix; pass a rigid 4x4 transform")
        if ee_pos is None:
            raise SofError("ee_pos is missing; pass the (3,) tool-centre-point position in world metres")
        ee = np.asarray(ee_pos, dtype=np.float64).reshape(-1)
        if ee.shape != (3,) or not np.all(np.isfinite(ee)):
            raise SofError(f"ee_pos must be 3 finite numbers in metres, got {ee_pos!r}")
        if isinstance(step_in_plan, bool) or not isinstance(step_in_plan, (int, np.integer)) or step_in_plan < 0:
            raise SofError(f"step_in_plan must be a non-negative integer, got {step_in_plan!r}")
        if seg is not None:
            seg = np.asarray(seg)
            if seg.shape != depth.shape:
                raise SofError(f"seg must match depth's shape {depth.shape}, got {seg.shape}")
        return flow, depth.astype(np.float64), K, P, ee, int(step_in_plan), seg

    # --- API ------------------------------------------------------------------------------
    def act(self, flow_plan: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray, cam_pose: np.ndarray,
            ee_pos: np.ndarray, step_in_plan: int = 0, seg: np.ndarray | None = None) -> np.ndarray:
        """One action (4,) in [-1, 1] for control step `step_in_plan` of `flow_plan`.

        The first call for a plan must pass the frame the plan starts from (at step_in_plan = s,
        the frame of plan step s); later calls with the same plan reuse that geometry and only
        use `ee_pos` to close the loop, so they may pass the current frame."""
        flow, depth, K, P, ee, s, seg = self._check(flow_plan, depth, intrinsics, cam_pose, ee_pos,
                                                    step_in_plan, seg)
        T = flow.shape[0]
        if flow.size == 0 or T == 0:
            return self._zero("empty flow plan: zero action")
        if s >= T:
            s_eff = T - 1  # plan exhausted: hold the last target
        else:
            s_eff = s
        key = hashlib.blake2b(np.ascontiguousarray(flow).tobytes(), digest_size=16).digest() + bytes(str(flow.shape), "ascii")
        sol = self.last_solution
        if key != self._cache_key or sol is None or sol.start > s_eff:
            sol = self._solve(flow.astype(np.float64), depth, K, P, ee, s_eff, seg)
            self._cache_key = key
            self.last_solution = sol
        if not sol.ok:
            return self._zero(sol.reason)
        if sol.grip is not None:
            self._grip = float(sol.grip)
        j = min(s_eff - sol.start + 1, len(sol.targets) - 1)
        delta = sol.targets[j] - ee
        a = np.zeros(4)
        a[:3] = np.clip(self.gain * delta / ACTION_SCALE_M, -1.0, 1.0)
        a[3] = self._grip
        if not np.all(np.isfinite(a)):
            return self._zero("non-finite action: zero action")
        suffix = " (plan exhausted: holding last target)" if s >= T else ""
        self.last_reason = f"{sol.reason}; step {s}/{T}{suffix}"
        return a

    def _zero(self, reason: str) -> np.ndarray:
        self.last_reason = reason
        return np.array([0.0, 0.0, 0.0, self._grip])

    # --- the geometry -----------------------------------------------------------------------
    def _solve(self, flow, depth, K, P, ee, start, seg) -> PlanSolution:
        fail = lambda why: PlanSolution(start, np.zeros((0, 3)), None, why, False)  # noqa: E731
        flows = flow[start:]
        T = len(flows)
        H, W = depth.shape
        h, w = flows.shape[1:3]
        scale = np.array([W / w, H / h], dtype=np.float64)
        finite = np.isfinite(flows)
        if not finite.any():
            return fail("flow plan is all NaN/inf: zero action")
        ee_cam = world_to_camera(P, ee)
        if ee_cam[2] <= 1e-3:
            return fail("end-effector is behind the camera: zero action")
        ee_px = project(K, ee_cam[None])[0]
        if not (0 <= ee_px[0] <= W - 1 and 0 <= ee_px[1] <= H - 1):
            return fail(f"end-effector projects outside the image at {np.round(ee_px, 1)}: zero action")
        valid_d = np.isfinite(depth) & (depth > 1e-3)
        if not valid_d.any():
            return fail("no valid depth: zero action")

        # Gripper points: near the projected TCP, depth consistent with the TCP.
        r = self.ee_radius_px
        u0, u1 = int(max(0, np.floor(ee_px[0] - r))), int(min(W - 1, np.ceil(ee_px[0] + r)))
        v0, v1 = int(max(0, np.floor(ee_px[1] - r))), int(min(H - 1, np.ceil(ee_px[1] + r)))
        vv, uu = np.mgrid[v0:v1 + 1, u0:u1 + 1]
        near = (uu - ee_px[0]) ** 2 + (vv - ee_px[1]) ** 2 <= r * r
        dwin = depth[v0:v1 + 1, u0:u1 + 1]
        vwin = valid_d[v0:v1 + 1, u0:u1 + 1]
        if not (near & vwin).any():
            return fail("no valid depth near the end-effector: zero action")
        gmask = near & vwin & (np.abs(dwin - ee_cam[2]) <= self.depth_tol)
        if seg is not None:
            gmask &= seg[v0:v1 + 1, u0:u1 + 1] >= 0
        n_g = int(gmask.sum())
        if n_g < self.min_points:
            return fail(f"only {n_g} gripper points with depth near the end-effector "
                        f"(< min_points={self.min_points}): zero action")
        g_pts = np.stack([uu[gmask], vv[gmask]], axis=1).astype(np.float64)
        g_tracks = chain_tracks(flows, g_pts, scale)  # (T+1, N, 2)
        g_ok = np.all(np.isfinite(g_tracks), axis=(0, 2))
        if g_ok.sum() < self.min_points:
            return fail(f"only {int(g_ok.sum())} gripper points have finite flow (< min_points): zero action")
        g_tracks = g_tracks[:, g_ok]
        g_tracks = g_tracks[0:1] + self.flow_gain * (g_tracks - g_tracks[0:1])
        g_disp = g_tracks - g_tracks[0:1]  # (T+1, N, 2)
        d2 = self._robust_disp(g_disp)  # (T+1, 2)

        # Translation-only targets: the TCP's pixel moves by d2, its depth is held.
        q = ee_px[None] + d2
        z = np.full(T + 1, ee_cam[2])
        method = "translation"

        # Scene points on a grid (about one per working cell quarter) for contact and visibility.
        stride = max(1, int(round(min(scale) / 2)))
        gv, gu = np.mgrid[0:H:stride, 0:W:stride]
        gv, gu = gv.ravel(), gu.ravel()
        keep = valid_d[gv, gu]
        gu, gv = gu[keep], gv[keep]
        s_pts = np.stack([gu, gv], axis=1).astype(np.float64)
        s_tracks = chain_tracks(flows, s_pts, scale)
        s_tracks = s_tracks[0:1] + self.flow_gain * (s_tracks - s_tracks[0:1])
        s_fin = np.all(np.isfinite(s_tracks), axis=(0, 2))
        s_disp = np.where(np.isfinite(s_tracks), s_tracks - s_tracks[0:1], 0.0)
        s_mag = np.linalg.norm(s_disp, axis=2).max(axis=0)
        static = s_fin & (s_mag < self.min_motion_px)
        s_cam = backproject(K, s_pts, depth[gv, gu])
        s_world = camera_to_world(P, s_cam)

        # Contact: object points near the TCP (not the gripper, not the arm above it) moving with it.
        grip = None
        g_total = d2[-1]
        g_move = float(np.linalg.norm(g_total))
        in_g = ((gu - ee_px[0]) ** 2 + (gv - ee_px[1]) ** 2 <= r * r) & (np.abs(depth[gv, gu] - ee_cam[2]) <= self.depth_tol)
        dist = np.linalg.norm(s_world - ee, axis=1)
        cand = s_fin & ~in_g & (dist <= self.contact_radius) & (s_world[:, 2] <= ee[2] + self.arm_margin)
        n_obj = 0
        if g_move >= self.min_motion_px and cand.any():
            od = s_disp[-1, cand]
            cos = od @ g_total / (np.linalg.norm(od, axis=1) * g_move + 1e-9)
            mag = np.linalg.norm(od, axis=1)
            co = (cos > 0.7) & (mag >= max(self.min_motion_px, 0.4 * g_move))
            n_obj = int(co.sum())
            if n_obj >= max(3, self.min_points // 2):
                grip = 1.0
                obj_idx = np.flatnonzero(cand)[co]
                if self.use_pnp:
                    pnp = self._pnp_targets(K, s_cam[obj_idx], s_tracks[:, obj_idx], ee_cam)
                    if pnp is not None:
                        tgt_cam, n_in = pnp
                        q = project(K, tgt_cam)
                        z = tgt_cam[:, 2]
                        method = f"pnp on {n_in} object points"
                if method == "translation":
                    method = f"translation, {n_obj} object points in contact"

        # Visibility bound: the TCP cannot be behind the static surface the plan moves it onto.
        n_vis = 0
        if self.visibility_margin is not None and static.any():
            dimg = np.full((H, W), np.inf)
            front = static & (depth[gv, gu] < ee_cam[2] - self.depth_tol)  # clearly in front of the hand
            sv, su = gv[front], gu[front]
            dimg[sv, su] = depth[sv, su]
            for k in range(1, T + 1):
                qu, qv = int(round(q[k, 0])), int(round(q[k, 1]))
                if not (0 <= qu < W and 0 <= qv < H):
                    continue
                rad = max(stride, 1)
                win = dimg[max(0, qv - rad):qv + rad + 1, max(0, qu - rad):qu + rad + 1]
                dmin = float(win.min()) if win.size else np.inf
                if np.isfinite(dmin) and z[k] > dmin - self.visibility_margin:
                    z[k] = max(dmin - self.visibility_margin, 1e-3)
                    n_vis += 1

        tgt_cam = backproject(K, q, z)
        targets = camera_to_world(P, tgt_cam)
        targets[0] = ee
        if not np.all(np.isfinite(targets)):
            return fail("non-finite 3-D targets: zero action")
        reason = f"ok: {int(g_ok.sum())} gripper points, {method}"
        if n_vis:
            reason += f", visibility bound on {n_vis} steps"
        return PlanSolution(start, targets, grip, reason, True)

    def _robust_disp(self, disp: np.ndarray) -> np.ndarray:
        """(T+1, N, 2) per-point displacements -> (T+1, 2): per step, the median displacement of
        the points that moved at least the `motion_quantile` quantile of the plan's total motion."""
        total = np.linalg.norm(disp[-1], axis=1)
        if self.motion_quantile > 0 and len(total) >= 2:
            sel = total >= np.quantile(total, self.motion_quantile)
            if sel.sum() >= 2:
                disp = disp[:, sel]
        return np.median(disp, axis=1)

    def _pnp_targets(self, K, obj_cam, obj_tracks, ee_cam):
        """Rigid object motion per plan step (solvePnPRansac) applied to the TCP; None if unfit."""
        import cv2

        if len(obj_cam) < self.pnp_min_points:
            return None
        extent = np.linalg.norm(obj_cam.max(axis=0) - obj_cam.min(axis=0))
        if extent < self.pnp_min_extent:
            return None
        T = obj_tracks.shape[0] - 1
        out = np.empty((T + 1, 3))
        out[0] = ee_cam
        obj = obj_cam.astype(np.float64)
        n_in = len(obj)
        rvec, tvec = np.zeros((3, 1)), np.zeros((3, 1))
        for k in range(1, T + 1):
            img = obj_tracks[k].astype(np.float64)
            try:
                ok, rvec_k, tvec_k, inl = cv2.solvePnPRansac(
                    obj, img, K, None, rvec.copy(), tvec.copy(), useExtrinsicGuess=True,
                    iterationsCount=100, reprojectionError=self.pnp_reproj_px, confidence=0.99,
                    flags=cv2.SOLVEPNP_ITERATIVE)
            except cv2.error:
                return None
            if not ok or inl is None or len(inl) < self.pnp_min_points // 2:
                return None
            Rk, _ = cv2.Rodrigues(rvec_k)
            tgt = Rk @ ee_cam + tvec_k.ravel()
            if not np.all(np.isfinite(tgt)) or tgt[2] <= 1e-3 or np.linalg.norm(tgt - ee_cam) > 0.5:
                return None
            out[k] = tgt
            rvec, tvec = rvec_k, tvec_k
            n_in = min(n_in, len(inl))
        return out, n_in
