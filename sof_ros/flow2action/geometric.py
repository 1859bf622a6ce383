"""Learning-free Flow2Action: a flow plan + depth + an object mask -> end-effector actions.

Object-centric, after AVDC's flow-to-action (flow-diffusion/AVDC, `MyPolicy_CL`), re-planned in
closed loop because SOF plans are short (a plan covers `T * frames_per_step` control steps, 8 for
the shipped checkpoint, where AVDC's video plan covers the whole task).

A plan is T flow fields (T, h, w, 2) in pixels of an h x w working grid; field k maps the frame of
control step k*f to the frame of step (k+1)*f (f = `frames_per_step`). Working cell j covers image
pixels [j*s, (j+1)*s) (area downsampling, s = W/w).

`GeometricFlow2Action.new_plan` analyses one plan on the frame it was made from:
1. Object points: up to `n_points` pixels of the object mask with valid depth, lifted to 3-D
   (`sof_ros.geometry`). Where the mask comes from is the caller's: in simulation the segmentation
   ids of the task's objects (as AVDC), on a robot a mask topic, or, with no mask at all,
   `motion_mask`: the pixels the plan moves that are not the arm.
2. Motion per field, cumulative from the plan's first frame (`tracking="model"`, AVDC's): move the
   points' current pixels by the field, fit the rigid motion of their current 3-D positions onto
   them, re-project -- the tracks stay those of one rigid body. A point samples the one of its four
   neighbouring cells whose flow is nearest the points' median (`sampling="consistent"`): a small
   object's cells border the still background, and a bilinear blend makes its track lag. The fit is
   PnP-RANSAC (`motion_model="se3"`); a fit that moves the object's centre faster than the arm can
   move (`max_speed_m` per control step) is replaced by a translation fit with a tabletop prior, and
   a translation still too fast loses the excess along the viewing ray, where a single camera sees
   motion only as a change of scale. While the gripper holds the object, the hand's points join the
   fit (they move rigidly with it), unless the object's own points stay still (a release).
   `tracking="chain"` chains bilinear flow tracks and fits each field to them instead.
3. Grasp point: the centre of the object's visible 3-D points, pushed away from the camera by half
   of what the camera cannot see of it (`grasp_from="3d"`; `"avdc"`: the mask point nearest the
   mask's 2-D geometric median).
4. The hand's own planned motion: a translation fit on the robot mask's tracks (the hand and
   fingers: segmentation in simulation, the arm's rendered model on a robot; without one, the
   pixels around the projected tool centre point that are neither object nor far from its depth),
   bounded in speed as the object's fit is (an unbounded fit put the hand a metre off along the
   viewing ray).

Control (`act`, every control step), from 3-D subgoals (`subgoals`, also the ROS node's pose
targets). The first plan that moves the object fixes the mode: grasp when it lifts the object by
`lift_m` or more (AVDC's test), else push. With `push_to_grasp_plans` N > 0, N plans in a row that
lift an object under `large_object_m` across turn a push into a grasp (traced with predicted plans:
the first plan, made with the hand far away, sank the ball into the table and fixed a push; every
plan made with the hand at the ball lifted it). 0 (the default) keeps the first plan's mode.
* grasp: hover `hover_m` above the grasp point, descend to the object's lower part
  (`grasp_z_frac` of its visible height), close for `close_steps` steps still pressing to that
  point. Held, the object's fitted motion carries the hand unless it would take the hand below
  where it grasped; then the hand follows its own planned track (`carry_with="auto"`: a placed
  puck is guided best by its own fit, while a wrench hidden under the fingers was fitted
  decimetres into the table; `"object"` and `"hand"` take one source always). Once the object
  has been seen `lift_m` above where it was first held it hangs in the hand (a door or faucet
  handle, never lifted, does not), and its fit uses `held_motion` (default "se3", as any object;
  "translation", since the hand is commanded in position only, measured no better). A plan that
  takes the hand `release_m` away from a still object opens the gripper; a lifted object seen
  `drop_m` or more from the hand has slipped out: the gripper opens and the grasp starts again;
* push (a closed fist, as AVDC): the contact point is the object's rear face along the plan's
  first centimetre of motion, `push_down_m` lower for a sideways push, reached from `push_back_m`
  behind it (hovering first when sideways); in contact, the hand follows that rear point as the
  object's planned motion carries it. A push direction is kept until `push_turn_plans` plans in a
  row turn it by more than `push_turn_deg` (a hinged door's planar points give PnP fits that
  alternate between two directions). For an object over `large_object_m` across
  (`push_from="size"`), whose rear point jitters between plans, a hand within `contact_m` of the
  start pushes from where it is, by the contact point's planned motion (closing any gap to the
  object's face along the push, never backing off against it). A plan that shows the object still
  holds the hand where it is while it is in contact; with `lost_contact_m` > 0 (0 = off), a hand
  that is further than that from the object is no longer in contact and approaches it again along
  the kept push direction (traced: a push that carried the hand 21 cm off the button, then plans
  showing the button still held it there for the rest of the episode). With `push_on_m` > 0 (0 =
  off), a hand in contact pushes on along the kept direction by that much per plan that shows the
  object still, instead of holding (traced: a door-close hand held at the push start for 450 steps
  while every plan showed the door still);
* before any plan moved the object: `approach="mask"` goes above the grasp point and down onto it,
  `"plan"` follows the hand's own planned motion. An approach under way to about the same point is
  kept while the arm, near the object, hides part of its mask;
* stall: `stall_steps` control steps with under `stall_m` of hand motion while the subgoal is
  further than `precision_m` -> `needs_replan` is set (the policy draws a fresh plan with
  temperature) and the hand backs off upward for `backoff_steps` steps;
* idle (`idle_steps`, 0 = off): as many control steps with under `stall_m` of hand motion because
  nothing is left to do -- the subgoal reached, or no subgoal at all (the plan shows nothing moving,
  or could not be analysed) -> the same fresh plan and back-off. Without it a plan that shows a still
  object from a still frame holds the arm still for the rest of the episode: the same frame gives
  the same greedy plan (traced: 452 of 500 steps on door-close, a held closed fist on LIBERO).

Action: clip(gain * (subgoal - ee_pos) / 0.01, -1, 1) with the gripper command; MetaWorld moves the
mocap by action * 1 cm per control step.

Fail-safe: malformed inputs a caller can fix raise SofError; an empty or non-finite plan, no valid
depth, an out-of-view end effector, too few trackable points give a zero motion action (the gripper
holds its command) and `last_reason` says why. Actions are always finite and in [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sof_ros.errors import SofError
from sof_ros.geometry import backproject, camera_to_world, project, resize_flow, world_to_camera

ACTION_SCALE_M = 0.01  # MetaWorld: the mocap moves action * 1 cm per control step
OPEN, CLOSED = -1.0, 1.0


# --- small geometry helpers ---------------------------------------------------------------
def _neighbour_cells(flow: np.ndarray, pts: np.ndarray, scale: np.ndarray):
    """Image-pixel points (N, 2) in working-cell coordinates (x, y) and their four neighbouring
    cells' indices (x0, y0, x1, y1), clipped to the field: what both samplers below read."""
    h, w = flow.shape[:2]
    x = np.clip((pts[:, 0] + 0.5) / scale[0] - 0.5, 0.0, w - 1.0)
    y = np.clip((pts[:, 1] + 0.5) / scale[1] - 0.5, 0.0, h - 1.0)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    return x, y, x0, y0, np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)


def sample_flow(flow: np.ndarray, pts: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Bilinearly sample one working-resolution flow field (h, w, 2) at image-pixel points (N, 2);
    returns image-pixel displacements (N, 2) (NaN where the field is non-finite)."""
    x, y, x0, y0, x1, y1 = _neighbour_cells(flow, pts, scale)
    ax = (x - x0)[:, None]
    ay = (y - y0)[:, None]
    v = (flow[y0, x0] * (1 - ax) * (1 - ay) + flow[y0, x1] * ax * (1 - ay)
         + flow[y1, x0] * (1 - ax) * ay + flow[y1, x1] * ax * ay)
    return v * scale[None, :]


def sample_flow_consistent(flow: np.ndarray, pts: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Like `sample_flow`, but each point takes the one of its 4 neighbouring cells whose flow is
    nearest the points' median flow instead of their bilinear blend: a point of a small object sits
    next to the background in most of its cells, and a blend with the background's (zero) flow makes
    its track lag. NaN where no neighbouring cell is finite."""
    _, _, x0, y0, x1, y1 = _neighbour_cells(flow, pts, scale)
    cand = np.stack([flow[y0, x0], flow[y0, x1], flow[y1, x0], flow[y1, x1]], axis=1)  # (N, 4, 2)
    with np.errstate(invalid="ignore"):
        ref = np.nanmedian(sample_flow(flow, pts, scale), axis=0) / scale if len(pts) else np.zeros(2)
    if not np.all(np.isfinite(ref)):
        ref = np.zeros(2)
    dist = np.linalg.norm(cand - ref, axis=2)
    dist = np.where(np.isfinite(dist), dist, np.inf)
    best = np.argmin(dist, axis=1)
    out = cand[np.arange(len(pts)), best] * scale[None, :]
    out[~np.isfinite(dist[np.arange(len(pts)), best])] = np.nan
    return out


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
    """A reference flow plan from T+1 rendered RGB (or gray) frames: DIS flow
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


def fit_translation(X: np.ndarray, uv: np.ndarray, K: np.ndarray, ray_ridge: float = 0.0, iters: int = 3,
                    up: np.ndarray | None = None, noise_px: float = 0.5, max_ray_std: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """The camera-frame translation t that best carries 3-D points X (N, 3) onto pixels uv (N, 2):
    linear least squares on the normalised-coordinate constraints x + t_x = a (z + t_z),
    y + t_y = b (z + t_z), refined by dropping points whose residual is over 3x the median.

    A single camera sees motion along the points' viewing ray r only as a change of scale, which a
    small or distant object barely shows. When the fit leaves that component uncertain (its
    standard deviation, for `noise_px` pixel noise per point, over `max_ray_std` of |t|) and `up`
    (world up in camera axes) is given, the component along r is chosen by a tabletop prior: the
    motion is taken as horizontal when the well-seen part of it is mostly horizontal, else as
    vertical as the flow allows. `ray_ridge` (per point) shrinks the component along r instead.
    Returns (t, inlier mask)."""
    a = (uv[:, 0] - K[0, 2] - K[0, 1] * (uv[:, 1] - K[1, 2]) / K[1, 1]) / K[0, 0]
    b = (uv[:, 1] - K[1, 2]) / K[1, 1]
    n = len(X)
    inl = np.ones(n, bool)
    ray = X.mean(axis=0)
    ray = ray / (np.linalg.norm(ray) + 1e-12)
    t = np.zeros(3)
    A = np.zeros((0, 3))
    for _ in range(max(1, iters)):
        m = int(inl.sum())
        A = np.zeros((2 * m + 1, 3))
        y = np.zeros(2 * m + 1)
        A[:m, 0], A[:m, 2] = 1.0, -a[inl]
        y[:m] = a[inl] * X[inl, 2] - X[inl, 0]
        A[m:2 * m, 1], A[m:2 * m, 2] = 1.0, -b[inl]
        y[m:2 * m] = b[inl] * X[inl, 2] - X[inl, 1]
        A[-1] = np.sqrt(ray_ridge * m) * ray
        t, *_ = np.linalg.lstsq(A, y, rcond=None)
        res = np.hypot(X[:, 0] + t[0] - a * (X[:, 2] + t[2]), X[:, 1] + t[1] - b * (X[:, 2] + t[2]))
        thr = 3.0 * max(np.median(res[inl]), 1e-4)
        new = res <= thr
        if new.sum() < max(3, n // 3) or np.array_equal(new, inl):
            break
        inl = new
    if up is not None:
        # uncertainty along the ray: the data's curvature in that direction (normalised units ~ depth)
        z = float(np.median(X[inl, 2]))
        sigma = noise_px / K[0, 0] * z
        curv = float(ray @ (A[:-1].T @ A[:-1]) @ ray)
        std_r = sigma / np.sqrt(max(curv, 1e-12))
        if std_r > max_ray_std * max(np.linalg.norm(t), 1e-6):
            t = _axis_prior(t - (t @ ray) * ray, ray, np.asarray(up, dtype=np.float64))
    return t, inl


def _axis_prior(tp: np.ndarray, r: np.ndarray, u: np.ndarray) -> np.ndarray:
    """tp + lam * r for the lam that makes the motion horizontal (when tp is mostly horizontal) or as
    vertical as possible (otherwise); lam is bounded by 3 |tp|."""
    h = lambda x: x - (x @ u) * u  # noqa: E731  horizontal part
    vert, hor = abs(tp @ u), np.linalg.norm(h(tp))
    lam = 0.0
    if hor >= vert and abs(r @ u) > 0.1:
        lam = -(tp @ u) / (r @ u)
    elif hor < vert and np.linalg.norm(h(r)) > 0.1:
        lam = -(h(tp) @ h(r)) / (h(r) @ h(r))
    bound = 3.0 * np.linalg.norm(tp)
    return tp + float(np.clip(lam, -bound, bound)) * r


def fit_se3(X: np.ndarray, uv: np.ndarray, K: np.ndarray, reproj_px: float = 1.5,
            guess: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray | None:
    """Camera-frame rigid motion (4x4) carrying X (N, 3) onto pixels uv (N, 2) by PnP-RANSAC, or None."""
    import cv2

    if len(X) < 6:
        return None
    rvec, tvec = guess if guess is not None else (np.zeros((3, 1)), np.zeros((3, 1)))
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(X.astype(np.float64), uv.astype(np.float64), K, None,
                                                 rvec.copy(), tvec.copy(), useExtrinsicGuess=True,
                                                 iterationsCount=100, reprojectionError=reproj_px,
                                                 confidence=0.99, flags=cv2.SOLVEPNP_ITERATIVE)
    except cv2.error:
        return None
    if not ok or inl is None or len(inl) < max(6, len(X) // 4):
        return None
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.ravel()
    return T if np.all(np.isfinite(T)) else None


def motion_mask(flow: np.ndarray, depth: np.ndarray, K: np.ndarray, cam_pose: np.ndarray, ee_pos: np.ndarray,
                robot_mask: np.ndarray | None = None, min_px: float = 1.5, arm_radius_m: float = 0.06,
                arm_margin_m: float = 0.02) -> np.ndarray:
    """An object mask that needs no simulator: the pixels the plan moves by at least `min_px` image
    pixels in total that are not the arm -- not in `robot_mask` (when the robot can render its
    own), not within `arm_radius_m` of the tool centre point, not higher than it by `arm_margin_m`
    (the arm above the hand)."""
    H, W = depth.shape
    flow = np.asarray(flow, np.float64)
    h, w = flow.shape[1:3]
    scale = np.array([W / w, H / h])
    total = np.nansum(flow, axis=0) * scale  # (h, w, 2) image px, summed fields (a proxy for the path)
    mag = np.hypot(total[..., 0], total[..., 1])
    v, u = np.mgrid[0:H, 0:W]
    cu = np.clip(((u + 0.5) / scale[0] - 0.5).round().astype(int), 0, w - 1)
    cv_ = np.clip(((v + 0.5) / scale[1] - 0.5).round().astype(int), 0, h - 1)
    moving = mag[cv_, cu] >= min_px
    valid = np.isfinite(depth) & (depth > 1e-3)
    world = camera_to_world(cam_pose, backproject(K, np.stack([u, v], -1).astype(np.float64), np.where(valid, depth, 1.0)))
    arm = np.linalg.norm(world - ee_pos, axis=-1) < arm_radius_m
    if robot_mask is not None:
        arm |= robot_mask.astype(bool)
    else:  # no model of the arm: what moves above the hand is taken for the arm
        arm |= world[..., 2] > ee_pos[2] + arm_margin_m
    return moving & valid & ~arm


def object_centre(Xw: np.ndarray, cam_pos: np.ndarray, lo: float = 10.0, hi: float = 90.0) -> np.ndarray:
    """The centre of an object from its visible 3-D surface points (world, N x 3): the middle of
    their robust (`lo`-`hi` percentile) extent in x, y and z, pushed away from the camera along the
    horizontal viewing direction by half of what the camera cannot see -- a camera sees the front
    of an object, so the visible points' depth extent falls short of its width across the view by
    about the hidden back (a ball seen from the side: visible depth r of width 2r, centre r/2 further)."""
    lo_, hi_ = np.percentile(Xw, [lo, hi], axis=0)
    c = 0.5 * (lo_ + hi_)
    d = c[:2] - np.asarray(cam_pos, np.float64)[:2]
    if np.linalg.norm(d) < 1e-6:
        return c
    d = d / np.linalg.norm(d)
    across = np.array([-d[1], d[0]])
    a, b = Xw[:, :2] @ d, Xw[:, :2] @ across
    seen = float(np.subtract(*np.percentile(a, [hi, lo])))
    width = float(np.subtract(*np.percentile(b, [hi, lo])))
    c[:2] += d * 0.5 * max(width - seen, 0.0)
    return c


def _avdc_grasp(px: np.ndarray, X: np.ndarray, K: np.ndarray, P: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """AVDC's grasp point: the sample nearest the mask's geometric median (2-D), median depth around it."""
    d2 = np.linalg.norm(px[:, None] - px[None], axis=2).sum(1) if len(px) <= 600 else \
        np.linalg.norm(px - np.median(px, axis=0), axis=1)
    g = int(np.argmin(d2))
    near = np.linalg.norm(px - px[g], axis=1) < 5.0 * max(scale.min() / 4, 1.0)
    gz = float(np.median(X[near, 2]))
    return camera_to_world(P, backproject(K, px[g], gz))


# --- the plan's geometry ------------------------------------------------------------------
@dataclass
class PlanMotion:
    """What one plan says, in world coordinates, from the frame it was made from."""

    ok: bool
    reason: str
    steps: np.ndarray = field(default_factory=lambda: np.zeros(1))  # (T+1,) control step of each plan frame
    obj_points: np.ndarray | None = None  # (N, 3) object points at the plan's first frame
    obj_T: np.ndarray | None = None  # (T+1, 4, 4) object motion, cumulative from the first frame
    obj_moving: bool = False
    obj_disp: np.ndarray = field(default_factory=lambda: np.zeros(3))  # object centre's planned displacement
    hand_disp: np.ndarray | None = None  # (T+1, 3) the hand's planned displacement
    hand_moving: bool = False
    grasp_point: np.ndarray | None = None  # AVDC: mask point nearest the geometric median, median depth

    def carry(self, p: np.ndarray) -> np.ndarray:
        """(T+1, 3): point p moved with the object."""
        return self.obj_T[:, :3, :3] @ p + self.obj_T[:, :3, 3]


def _world_T(P: np.ndarray, T_cam: np.ndarray) -> np.ndarray:
    """A camera-frame motion (points X_cam -> T X_cam) as a world-frame motion."""
    Pinv = np.eye(4)
    Pinv[:3, :3] = P[:3, :3].T
    Pinv[:3, 3] = -P[:3, :3].T @ P[:3, 3]
    return P @ T_cam @ Pinv


NO_SUBGOAL = "; no subgoal: zero motion"


def _count_or_off(name: str, value) -> int:
    """A solver setting that counts steps or plans, 0 meaning the rule is off."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise SofError(f"{name} must be a whole number >= 0 (0: off), got {value!r}")
    return int(value)


def _metres_or_off(name: str, value) -> float:
    """A solver setting that is a distance in metres, 0 meaning the rule is off."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (np.isfinite(value) and value >= 0):
        raise SofError(f"{name} must be a distance in metres >= 0 (0 = off), got {value!r}")
    return float(value)


# --- the solver ---------------------------------------------------------------------------
class GeometricFlow2Action:
    """Flow plan + depth + object mask + camera model + TCP position -> actions [dx, dy, dz, grip].

    Call `reset()` at an episode start, `new_plan(...)` on the frame each plan was made from (or let
    `act` do it: it analyses a plan it has not seen), then `act(...)` every control step. See the
    module docstring for the control rules; lengths are metres, image pixels are depth pixels.
    """

    def __init__(self, gain: float = 0.25, precision_m: float = 0.02, n_points: int = 500, min_points: int = 6,
                 motion_model: str = "se3", ray_ridge: float = 0.0, obj_move_m: float = 0.01,
                 obj_move_px: float = 1.0, hand_move_m: float = 0.01, contact_m: float = 0.05,
                 lift_m: float = 0.03, close_steps: int = 8, hover_m: float = 0.12, reach_tol_m: float = 0.02,
                 grasp_z_tol_m: float = 0.025, push_back_m: float = 0.08, push_down_m: float = 0.03,
                 release_m: float = 0.05, drop_m: float = 0.10, stall_steps: int = 15, stall_m: float = 0.001,
                 backoff_steps: int = 6, idle_steps: int = 0, push_to_grasp_plans: int = 0, lost_contact_m: float = 0.0,
                 push_on_m: float = 0.0,
                 approach: str = "mask", grasp_from: str = "3d", tracking: str = "model", grasp_z_frac: float = 0.3,
                 max_speed_m: float = 0.015, sampling: str = "consistent", push_turn_deg: float = 60.0,
                 push_turn_plans: int = 3, push_from: str = "size", large_object_m: float = 0.15, carry_with: str = "auto",
                 held_motion: str = "se3",
                 ee_radius_px: float = 8.0, depth_tol: float = 0.06,
                 flow_noise_px: float = 0.5, max_plan_steps: int = 1024, seed: int = 0, flow_scale: float = 1.0):
        if not (np.isfinite(gain) and gain > 0):
            raise SofError(f"gain must be a positive number, got {gain}")
        if not (np.isfinite(flow_scale) and flow_scale > 0):
            raise SofError(f"flow_scale must be a positive number, got {flow_scale}")
        self.flow_scale = float(flow_scale)  # plans learned from DIS flow under-report motion (docs/learning_free.md)
        if motion_model not in ("translation", "se3"):
            raise SofError(f"motion_model must be 'translation' or 'se3', got {motion_model!r}")
        if approach not in ("plan", "mask"):
            raise SofError(f"approach must be 'plan' (follow the plan's hand) or 'mask' (go to the object), got {approach!r}")
        if grasp_from not in ("3d", "avdc"):
            raise SofError(f"grasp_from must be '3d' (centre of the lifted mask points) or 'avdc' (2-D median), got {grasp_from!r}")
        if n_points < 1 or min_points < 1 or not precision_m > 0:
            raise SofError("n_points and min_points must be at least 1 and precision_m positive")
        self.gain, self.precision_m = float(gain), float(precision_m)
        self.n_points, self.min_points = int(n_points), int(min_points)
        self.motion_model, self.ray_ridge = motion_model, float(ray_ridge)
        self.obj_move_m, self.obj_move_px, self.hand_move_m = float(obj_move_m), float(obj_move_px), float(hand_move_m)
        self.contact_m, self.lift_m, self.close_steps = float(contact_m), float(lift_m), int(close_steps)
        self.hover_m, self.reach_tol_m, self.grasp_z_tol_m = float(hover_m), float(reach_tol_m), float(grasp_z_tol_m)
        self.push_back_m, self.push_down_m, self.release_m = float(push_back_m), float(push_down_m), float(release_m)
        self.drop_m = float(drop_m)
        self.stall_steps, self.stall_m, self.backoff_steps = int(stall_steps), float(stall_m), int(backoff_steps)
        self.idle_steps = _count_or_off("idle_steps", idle_steps)
        self.push_to_grasp_plans = _count_or_off("push_to_grasp_plans", push_to_grasp_plans)
        self.lost_contact_m = _metres_or_off("lost_contact_m", lost_contact_m)
        self.push_on_m = _metres_or_off("push_on_m", push_on_m)
        self.approach, self.grasp_from = approach, grasp_from
        if tracking not in ("model", "chain"):
            raise SofError(f"tracking must be 'model' (AVDC: re-project the fitted motion) or 'chain' (chain the flow), got {tracking!r}")
        self.tracking, self.grasp_z_frac = tracking, float(grasp_z_frac)
        self.max_speed_m = float(max_speed_m)  # metres per control step: no planned motion is faster
        if sampling not in ("consistent", "bilinear"):
            raise SofError(f"sampling must be 'consistent' or 'bilinear', got {sampling!r}")
        self.sampling = sampling
        if not 0.0 < push_turn_deg <= 180.0 or push_turn_plans < 1:
            raise SofError(f"push_turn_deg must be in (0, 180] and push_turn_plans at least 1, got {push_turn_deg}, "
                           f"{push_turn_plans}")
        self.push_turn_cos, self.push_turn_plans = float(np.cos(np.radians(push_turn_deg))), int(push_turn_plans)
        if push_from not in ("contact", "hand", "size"):
            raise SofError(f"push_from must be 'contact' (push from the object's rear point), 'hand' (move the hand by "
                           f"the contact point's planned motion) or 'size' ('hand' for an object over large_object_m "
                           f"across, else 'contact'), got {push_from!r}")
        self.push_from, self.large_object_m = push_from, float(large_object_m)
        if carry_with not in ("object", "hand", "auto"):
            raise SofError(f"carry_with must be 'object' (the held object's fitted motion), 'hand' (the hand's own "
                           f"planned track) or 'auto' (the object's unless it goes below the grasp), got {carry_with!r}")
        self.carry_with = carry_with
        if held_motion not in ("translation", "se3"):
            raise SofError(f"held_motion must be 'translation' (the hand does not turn, so neither does what it holds) "
                           f"or 'se3', got {held_motion!r}")
        self.held_motion = held_motion
        self._fps = 1
        self.ee_radius_px, self.depth_tol = float(ee_radius_px), float(depth_tol)
        self.max_plan_steps = int(max_plan_steps)
        self.flow_noise_px = self._noise_px = float(flow_noise_px)
        self.seed = int(seed)
        self.reset()

    def reset(self) -> None:
        """Start of an episode: gripper open, no plan, no contact."""
        self._rng = np.random.default_rng(self.seed)
        self.grip = OPEN
        self.mode: str | None = None  # "grasp" | "push" once the object has moved in a plan
        self.in_contact = False  # grasp: the gripper closed on the object; push: the hand at the object
        self._held_z: float | None = None  # grasp: the held object's median height when first seen held
        self.lifted = False  # grasp: the held object has been seen lift_m above that height
        self._after_reach: np.ndarray | None = None  # push: the subgoals to follow once the approach is done
        self._push_dir: np.ndarray | None = None  # push: the last direction a plan pushed the object
        self._push_hand = False  # push: the hand pushes from where it is (push_from), decided per plan
        self._push_turns = 0  # push: plans in a row whose direction turned more than push_turn_deg from it
        self._lift_plans = 0  # push: plans in a row that lift the object (push_to_grasp_plans)
        self.current_target: np.ndarray | None = None
        self.subgoals: np.ndarray | None = None  # (T+1, 3) world subgoals, followed in order
        self._sub = 0  # index of the subgoal being chased
        self.waypoints: list[np.ndarray] = []  # reach-phase targets (hover, contact point), in order
        self.last_motion: PlanMotion | None = None
        self.last_reason = "reset"
        self.needs_replan = False
        self.replans = 0
        self._plan_id: object = None
        self._plan_start = 0
        self._hold = 0  # steps left holding still (gripper closing)
        self._hold_at: np.ndarray | None = None  # where the hand presses while the gripper closes
        self._backoff = 0
        self._stall = 0
        self._idle = 0  # control steps in a row the hand has stood still with nothing left to do
        self._prev_ee: np.ndarray | None = None

    # --- input checks (SofError for what a caller can fix) -----------------------------------
    def _check(self, flow_plan, depth, intrinsics, cam_pose, ee_pos, mask):
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
        ee = self._check_ee(ee_pos)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != depth.shape:
                raise SofError(f"the object mask must match depth's shape {depth.shape}, got {mask.shape}")
            mask = mask.astype(bool)
        return flow, depth.astype(np.float64), K, P, ee, mask

    @staticmethod
    def _check_ee(ee_pos) -> np.ndarray:
        if ee_pos is None:
            raise SofError("ee_pos is missing; pass the (3,) tool-centre-point position in world metres")
        ee = np.asarray(ee_pos, dtype=np.float64).reshape(-1)
        if ee.shape != (3,) or not np.all(np.isfinite(ee)):
            raise SofError(f"ee_pos must be 3 finite numbers in metres, got {ee_pos!r}")
        return ee

    # --- plan analysis ---------------------------------------------------------------------
    def analyse(self, flow_plan, depth, intrinsics, cam_pose, ee_pos, object_mask=None, robot_mask=None,
                frames_per_step: int = 1) -> PlanMotion:
        """The plan's object and hand motion in world coordinates (no controller state changes)."""
        flow, depth, K, P, ee, mask = self._check(flow_plan, depth, intrinsics, cam_pose, ee_pos, object_mask)
        if isinstance(frames_per_step, bool) or not isinstance(frames_per_step, (int, np.integer)) or frames_per_step < 1:
            raise SofError(f"frames_per_step must be a positive integer, got {frames_per_step!r}")
        T = flow.shape[0]
        fail = lambda why: PlanMotion(False, why)  # noqa: E731
        if flow.size == 0 or T == 0:
            return fail("empty flow plan: zero action")
        flow = flow.astype(np.float64) * self.flow_scale
        if not np.isfinite(flow).any():
            return fail("flow plan is all NaN/inf: zero action")
        H, W = depth.shape
        h, w = flow.shape[1:3]
        scale = np.array([W / w, H / h])
        self._noise_px = self.flow_noise_px * float(scale.max())  # half a working pixel, in image pixels
        steps = np.arange(T + 1) * int(frames_per_step)
        self._fps = int(frames_per_step)
        ee_cam = world_to_camera(P, ee)
        if ee_cam[2] <= 1e-3:
            return fail("end-effector is behind the camera: zero action")
        ee_px = project(K, ee_cam[None])[0]
        if not (0 <= ee_px[0] <= W - 1 and 0 <= ee_px[1] <= H - 1):
            return fail(f"end-effector projects outside the image at {np.round(ee_px, 1)}: zero action")
        valid = np.isfinite(depth) & (depth > 1e-3)
        if not valid.any():
            return fail("no valid depth: zero action")
        if robot_mask is not None:
            robot_mask = np.asarray(robot_mask).astype(bool)
            if robot_mask.shape != depth.shape:
                raise SofError(f"the robot mask must match depth's shape {depth.shape}, got {robot_mask.shape}")
        if mask is None:
            mask = motion_mask(flow, depth, K, P, ee, robot_mask)
        m = mask & valid
        if robot_mask is not None:
            m &= ~robot_mask
        hand = self._hand_motion(flow, depth, K, P, ee, ee_cam, ee_px, scale, valid, m, robot_mask)
        hand_moving = hand is not None and float(np.linalg.norm(hand, axis=1).max()) >= self.hand_move_m
        holding = self.mode == "grasp" and self.in_contact
        held = robot_mask & valid if (robot_mask is not None and holding) else None
        obj = self._object_motion(flow, depth, K, P, m, scale, rigid_with=held,
                                  model=self.held_motion if holding and self.lifted else None)
        if isinstance(obj, str):
            if hand is None:
                return fail(f"{obj}, and no hand points to follow: zero action")
            return PlanMotion(True, obj, steps, hand_disp=hand, hand_moving=hand_moving)
        Xw, obj_T, disp, moving, grasp = obj
        return PlanMotion(True, f"{len(Xw)} object points", steps, Xw, obj_T, moving, disp, hand, hand_moving, grasp)

    def _object_motion(self, flow, depth, K, P, m, scale, rigid_with=None, model: str | None = None):
        """The object's points, motion, planned displacement, whether it moves and its grasp point --
        or a string saying why there is no object to track. `rigid_with`: a mask of points that move
        rigidly with the object (the hand holding it), added to the motion fit only when the object's own
        points move (or are too few to fit alone): a plan in which the hand lets go and leaves must not
        drag a still object along with it. `model`: the motion model of the fit (default motion_model)."""
        if rigid_with is not None and rigid_with.any():
            alone = self._object_motion(flow, depth, K, P, m, scale)
            if not isinstance(alone, str) and not alone[3]:
                return alone
        vv, uu = np.nonzero(m)
        if len(uu) < self.min_points:
            return f"only {len(uu)} object pixels with valid depth (< min_points={self.min_points})"
        px, X = self._sample_points(vv, uu, depth, K)
        n_obj = len(px)
        if rigid_with is not None and rigid_with.any():
            hv, hu = np.nonzero(rigid_with & ~m)
            hpx, hX = self._sample_points(hv, hu, depth, K)
            px, X = np.concatenate([px, hpx]), np.concatenate([X, hX])
        if self.tracking == "model":
            obj_T, tracks = self._fit_motion_model(X, px, flow, K, P, scale, model)
        else:
            tracks = chain_tracks(flow, px, scale)
            obj_T = None
        ok = np.all(np.isfinite(tracks[1]), axis=1)
        if ok.sum() < self.min_points:
            return f"only {int(ok.sum())} object points have finite flow (< min_points)"
        if obj_T is None:
            obj_T = self._fit_motion(X, tracks, K, P, model)
        px, X, tracks = px[:n_obj], X[:n_obj], tracks[:, :n_obj]
        Xw = camera_to_world(P, X)
        centre = Xw.mean(axis=0)
        carried = obj_T[:, :3, :3] @ centre + obj_T[:, :3, 3]
        disp = carried[-1] - centre
        last = np.all(np.isfinite(tracks), axis=2)  # (T+1, N): still tracked at each frame
        kk = int(np.max(np.flatnonzero(last.sum(1) >= min(self.min_points, max(1, n_obj))))) if last.any() else 0
        px_move = float(np.median(np.linalg.norm(tracks[kk][last[kk]] - tracks[0][last[kk]], axis=1))) if kk else 0.0
        moving = bool(np.linalg.norm(carried - centre, axis=1).max() >= self.obj_move_m and px_move >= self.obj_move_px)
        grasp = object_centre(Xw, P[:3, 3]) if self.grasp_from == "3d" else _avdc_grasp(px, X, K, P, scale)
        return Xw, obj_T, disp, moving, grasp

    def _sample_points(self, vv, uu, depth, K):
        """At most n_points random pixels of (vv, uu) and their camera-frame points: the one way the
        object, the hand and the points held with the object are sampled."""
        if len(uu) > self.n_points:
            pick = self._rng.choice(len(uu), self.n_points, replace=False)
            vv, uu = vv[pick], uu[pick]
        px = np.stack([uu, vv], 1).astype(np.float64)
        return px, backproject(K, px, depth[vv, uu])

    def _sample_tracks(self, vv, uu, flow, depth, K, scale):
        """`_sample_points` and their chained flow tracks (the hand's)."""
        px, X = self._sample_points(vv, uu, depth, K)
        return px, X, chain_tracks(flow, px, scale)

    def _fit_motion_model(self, X, px, flow, K, P, scale, model: str | None = None):
        """AVDC's tracking: field by field, move the points' current image positions by the flow, fit
        the rigid motion of their current 3-D positions onto them, then re-project the moved 3-D
        points -- the tracks stay those of one rigid body, so a point that samples another surface's
        flow at the object's border (or a bad field) is not carried on. Returns the (T+1, 4, 4)
        world-frame motion, cumulative from the first frame, and the (T+1, N, 2) model tracks (NaN
        where a point's flow is undefined)."""
        T = flow.shape[0]
        out = np.tile(np.eye(4), (T + 1, 1, 1))
        tracks = np.full((T + 1, len(px), 2), np.nan)
        tracks[0] = px
        Xc, uv = X.copy(), px.copy()
        cum = np.eye(4)
        for k in range(T):
            d = (sample_flow_consistent if self.sampling == "consistent" else sample_flow)(flow[k], uv, scale)
            target = uv + d
            fin = np.all(np.isfinite(target), axis=1)
            if fin.sum() < self.min_points:
                out[k + 1:] = out[k]  # nothing left to track: the object stays where last seen
                break
            Tc = self._bounded_fit(Xc[fin], target[fin], K, P, np.eye(4), model=model)
            Xc = Xc @ Tc[:3, :3].T + Tc[:3, 3]
            uv = project(K, Xc)
            cum = Tc @ cum
            out[k + 1] = _world_T(P, cum)
            tracks[k + 1] = np.where(fin[:, None], uv, np.nan)
        return out, tracks

    def _fit_motion(self, X, tracks, K, P, model: str | None = None) -> np.ndarray:
        """(T+1, 4, 4) world-frame motion of the points X (camera frame) along their chained tracks,
        each field's fit cumulative from the first frame (`model`: `motion_model` unless given)."""
        model = model or self.motion_model
        T = tracks.shape[0] - 1
        out = np.tile(np.eye(4), (T + 1, 1, 1))
        guess = None
        prev = np.eye(4)
        for k in range(1, T + 1):
            fin = np.all(np.isfinite(tracks[k]), axis=1)  # points lost to occlusion drop out
            if fin.sum() < self.min_points:
                out[k:] = out[k - 1]  # nothing left to track: the object stays where last seen
                break
            Tc = self._bounded_fit(X[fin], tracks[k][fin], K, P, prev, guess, model)
            if model == "se3":
                import cv2

                guess = (cv2.Rodrigues(Tc[:3, :3])[0], Tc[:3, 3].reshape(3, 1))
            prev = Tc
            out[k] = _world_T(P, Tc)
        return out

    def _bounded_fit(self, X, uv, K, P, prev: np.ndarray, guess=None, model: str | None = None) -> np.ndarray:
        """The camera-frame rigid motion carrying X onto uv: PnP-RANSAC (motion_model "se3"), or a
        translation with the tabletop prior where PnP fails or moves the points' centre further from
        where `prev` (the previous field's motion) put it than the arm can move in one field
        (`max_speed_m` per control step): along the viewing ray a small object's change of scale is
        too weak a signal, and such a fit is its noise. A translation that is still too fast loses
        the excess along the viewing ray."""
        c = X.mean(axis=0)
        c_prev = prev[:3, :3] @ c + prev[:3, 3]
        bound = self.max_speed_m * self._fps
        Tc = fit_se3(X, uv, K, guess=guess) if (model or self.motion_model) == "se3" else None
        if Tc is not None and np.linalg.norm(Tc[:3, :3] @ c + Tc[:3, 3] - c_prev) <= bound:
            return Tc
        t, _ = fit_translation(X, uv, K, self.ray_ridge, up=P[:3, :3].T @ [0, 0, 1.0], noise_px=self._noise_px)
        d = c + t - c_prev
        if np.linalg.norm(d) > bound:
            r = (c + t) / np.linalg.norm(c + t)
            dp, lam = d - (d @ r) * r, float(d @ r)
            extra = np.sqrt(max(bound ** 2 - dp @ dp, 0.0))
            t = t - d + dp + float(np.clip(lam, -extra, extra)) * r
        Tc = np.eye(4)
        Tc[:3, 3] = t
        return Tc

    def _hand_motion(self, flow, depth, K, P, ee, ee_cam, ee_px, scale, valid, obj_mask, robot_mask):
        """(T+1, 3) planned displacement of the hand (world), or None without hand points."""
        H, W = depth.shape
        if robot_mask is not None:
            hm = robot_mask & valid
        else:  # no robot model: pixels around the projected TCP at its depth that are not the object
            r = self.ee_radius_px
            v, u = np.mgrid[0:H, 0:W]
            hm = ((u - ee_px[0]) ** 2 + (v - ee_px[1]) ** 2 <= r * r) & valid & ~obj_mask
            hm &= np.abs(np.where(valid, depth, 0) - ee_cam[2]) <= self.depth_tol
        vv, uu = np.nonzero(hm)
        if len(uu) < self.min_points:
            return None
        _, X, tracks = self._sample_tracks(vv, uu, flow, depth, K, scale)
        if tracks.shape[0] < 2 or np.all(np.isfinite(tracks[1]), axis=1).sum() < self.min_points:
            return None
        # the same speed-bounded fit as the object's: an unbounded translation fit of the hand's points
        # can put the hand a metre off along the viewing ray, where one camera sees only a change of scale
        Tw = self._fit_motion(X, tracks, K, P, model="translation")
        return Tw[:, :3, :3] @ ee + Tw[:, :3, 3] - ee

    # --- control ---------------------------------------------------------------------------
    def new_plan(self, flow_plan, depth, intrinsics, cam_pose, ee_pos, object_mask=None, robot_mask=None,
                 frames_per_step: int = 1, plan_id: object = None) -> PlanMotion:
        """Analyse a plan made from this frame and update the subgoals (see the module docstring)."""
        mot = self.analyse(flow_plan, depth, intrinsics, cam_pose, ee_pos, object_mask, robot_mask, frames_per_step)
        ee = self._check_ee(ee_pos)
        self._plan_id = plan_id
        self._plan_start = 0
        self.last_motion = mot
        self.needs_replan = False
        if not mot.ok:
            self.subgoals = None
            self.last_reason = mot.reason
            return mot
        if mot.obj_points is None:  # the object is not seen (hidden in the hand, out of view)
            if mot.hand_disp is not None and (self.in_contact or self.approach == "plan"):
                self.waypoints = []
                self._set_subgoals(ee + mot.hand_disp)
                self.last_reason = f"{mot.reason}: hand follows the plan {np.round(mot.hand_disp[-1], 3).tolist()} m"
            else:
                self.subgoals, self.waypoints = None, []
                self.last_reason = f"{mot.reason}: holding"
            return mot
        g = mot.grasp_point
        chain = mot.carry(g)
        lifts = mot.obj_moving and float(chain[:, 2].max() - g[2]) >= self.lift_m
        turned = False
        if mot.obj_moving and self.mode is None:  # AVDC: a grasp when the plan lifts the object, else a push
            self.mode = "grasp" if lifts else "push"
        elif mot.obj_moving and self.mode == "push" and self.push_to_grasp_plans > 0:
            self._lift_plans = self._lift_plans + 1 if lifts and not self._large(mot) else 0
            if self._lift_plans >= self.push_to_grasp_plans:  # the push was read off a plan that lied
                self.mode, self._push_dir, self._push_turns, self._lift_plans = "grasp", None, 0, 0
                self.waypoints, self._after_reach, self._hold_at, turned = [], None, None, True
                self._let_go()
        near = float(np.linalg.norm(mot.obj_points - ee, axis=1).min())
        dropped = False
        if self.mode == "grasp" and self.in_contact and self._hold <= 0:
            z = float(np.median(mot.obj_points[:, 2]))
            self._held_z = z if self._held_z is None else self._held_z
            self.lifted = self.lifted or z - self._held_z >= self.lift_m  # seen, not planned: it hangs in the hand
            # a lifted object is at the hand: one drop_m away it slipped out, so grasp it again (a door or
            # faucet handle, never lifted, is left behind by a mis-fitted carry instead: not a drop)
            dropped = self.lifted and near > self.drop_m
        if dropped:
            self._let_go()
            self._hold_at = None
        if self.mode == "grasp":
            why = self._plan_grasp(mot, ee, g)
            if turned:
                why = f"{self.push_to_grasp_plans} plan(s) in a row lift the object: a grasp, not a push; {why}"
            if dropped:
                why = f"dropped: the object is {near:.2f} m from the hand; {why}"
        elif self.mode == "push":
            why = self._plan_push(mot, ee, g, chain, near)
        elif self.approach == "plan" and mot.hand_moving:  # the object has not moved in any plan yet
            self.waypoints = []
            self._set_subgoals(ee + mot.hand_disp)
            why = f"object still; hand follows the plan {np.round(mot.hand_disp[-1], 3).tolist()} m"
        else:
            self._approach([g + np.array([0.0, 0.0, self.hover_m]), g])
            why = f"object still: approach the grasp point {np.round(g, 3).tolist()} from above"
        self.last_reason = why
        return mot

    def _approach(self, waypoints: list[np.ndarray], then: np.ndarray | None = None) -> None:
        """Reach `waypoints` in order (hover, contact point), then follow `then`. An approach under way
        to about the same contact point (within 3 cm) is kept: the arm near the object hides part of
        its mask, and a contact point that jitters with it sends the hand up and down."""
        if not (self.waypoints and np.linalg.norm(self.waypoints[-1] - waypoints[-1]) < 0.03):
            self.waypoints = [np.asarray(w, np.float64) for w in waypoints]
        self._after_reach = then
        self.subgoals = None

    def _let_go(self) -> None:
        """Forget the grasp (a release or a drop): open, not in contact, no held height seen."""
        self.grip, self.in_contact = OPEN, False
        self._held_z, self.lifted = None, False

    def _plan_grasp(self, mot: PlanMotion, ee: np.ndarray, g: np.ndarray) -> str:
        if not self.in_contact:  # hover above the object's centre, descend, close (AVDC)
            self.grip = OPEN
            lo, hi = np.percentile(mot.obj_points[:, 2], [10, 90])
            g = np.array([g[0], g[1], lo + self.grasp_z_frac * (hi - lo)])  # fingers around its lower half
            self._approach([g + np.array([0.0, 0.0, self.hover_m]), g])
            return f"grasp: approach the object's centre {np.round(g, 3).tolist()} from above"
        if mot.obj_moving:  # held: the hand moves rigidly with the object
            self.waypoints = []
            carried = mot.carry(ee)
            floor = None if self._hold_at is None else self._hold_at[2] - self.grasp_z_tol_m
            below = floor is not None and float(carried[:, 2].min()) < floor
            own = mot.hand_disp is not None and (self.carry_with == "hand" or (self.carry_with == "auto" and below))
            # the hand's own track: the hand is larger and better seen than a small object under it, whose
            # fitted motion (its points hidden by the fingers) can be off by decimetres -- "auto" takes it
            # only when the object's fit would carry the hand below where it grasped
            self._set_subgoals(ee + mot.hand_disp if own else carried)
            if own:
                return f"object moves {np.round(mot.obj_disp, 3).tolist()} m: the hand carries it along its own track"
            return f"object moves {np.round(mot.obj_disp, 3).tolist()} m: the hand carries it"
        if mot.hand_moving and self.grip == CLOSED and \
                float(np.linalg.norm(mot.obj_points - (ee + mot.hand_disp[-1]), axis=1).min()) >= self.release_m:
            self._let_go()  # the plan takes the hand away from an object that stays
            self._set_subgoals(ee + mot.hand_disp)
            return "release: the plan moves the hand away from a still object"
        self._set_subgoals(ee[None])
        return "object still in the plan, held: holding"

    def _large(self, mot: PlanMotion) -> bool:
        """The object spans large_object_m or more (a door, a faucet): pushed, never picked up."""
        lo, hi = np.percentile(mot.obj_points, [5, 95], axis=0)
        return float(np.linalg.norm(hi - lo)) >= self.large_object_m

    def _plan_push(self, mot: PlanMotion, ee: np.ndarray, g: np.ndarray, chain: np.ndarray, near: float) -> str:
        self.grip = CLOSED  # a closed fist pushes (AVDC)
        kept = False
        self._push_hand = self.push_from == "hand" or (self.push_from == "size" and self._large(mot))
        if not mot.obj_moving:
            touching = self.in_contact and not 0 < self.lost_contact_m < near
            if touching or self._push_dir is None:
                if touching and self._push_dir is not None and self.push_on_m > 0:
                    self._set_subgoals((ee + self.push_on_m * self._push_dir)[None])
                    return f"object still in the plan: pushing on {self.push_on_m:.2f} m along the kept direction"
                self._set_subgoals(ee[None])
                return "object still in the plan: holding"
            d = self._push_dir  # re-approach along the last push direction seen
        else:
            step = np.linalg.norm(chain - g, axis=1)
            k = int(np.argmax(step >= 0.01)) if (step >= 0.01).any() else len(chain) - 1
            d = chain[k] - g
            d = d / max(np.linalg.norm(d), 1e-9)
            if self._push_dir is not None and float(d @ self._push_dir) < self.push_turn_cos:
                self._push_turns += 1  # one plan turning the push round is more often a mis-fit (a hinged
                if self._push_turns < self.push_turn_plans:  # door's planar points) than a new push:
                    d, kept = self._push_dir, True  # keep the direction until push_turn_plans plans in a row agree
                else:
                    self._push_turns = 0
            else:
                self._push_turns = 0
            self._push_dir = d
        # the contact point: on the object's rear face along the push, lower for a sideways push (AVDC)
        rear = g + float(np.min((mot.obj_points - g) @ d)) * d
        down = self.push_down_m * float(np.linalg.norm(d[:2]))
        contact = rear - np.array([0.0, 0.0, down])
        if kept:  # the plan's motion turned away from the kept direction: push along it, as far as the plan moves
            chain_c = contact + step[:, None] * d  # step: how far the plan has moved the grasp point, per frame
        else:
            chain_c = mot.carry(rear) - np.array([0.0, 0.0, down])
        if self.in_contact and near <= 2 * self.contact_m and mot.obj_moving:
            self.waypoints = []
            # "hand": the hand, already at the object, moves as the contact point does from where it is -- a
            # large object's rear point jitters between plans and sends the hand back before each push
            # (closing any gap to the object's face along the push first, never backing off against it)
            gap = max(0.0, float((contact - ee) @ d)) * d
            self._set_subgoals(ee + gap + chain_c - chain_c[0] if self._push_hand else chain_c)
            return (f"object moves {np.round(mot.obj_disp, 3).tolist()} m: pushing it from {np.round(contact, 3).tolist()}"
                    + (" along the kept direction" if kept else ""))
        self.in_contact = False
        start = contact - self.push_back_m * d
        low_by_it = (self._push_hand and ee[2] < start[2] + 0.5 * self.hover_m
                     and float(np.linalg.norm(ee[:2] - start[:2])) < self.push_back_m)
        if float(np.linalg.norm(d[:2])) >= 0.5 and not low_by_it:  # sideways: hover above the start, descend, push
            way = [start + np.array([0.0, 0.0, self.hover_m]), start]
        else:  # mostly up or down: straight to the start point
            way = [start]
        self._approach(way, then=chain_c if mot.obj_moving else None)
        return (f"push along {np.round(d, 2).tolist()}" + (" (kept: this plan turned it)" if kept else "")
                + f": approach {np.round(start, 3).tolist()}")

    def _set_subgoals(self, points: np.ndarray) -> None:
        self.subgoals = np.asarray(points, dtype=np.float64)
        self._sub = 1 if len(self.subgoals) > 1 else 0

    def target(self, ee: np.ndarray, step_in_plan: int) -> np.ndarray | None:
        """The 3-D subgoal for this control step (also the node's pose target), or None."""
        if self._backoff > 0:
            return ee + np.array([0.0, 0.0, 0.02])
        if self._hold > 0:
            return ee.copy() if self._hold_at is None else self._hold_at
        if self.waypoints:  # AVDC: above the contact point first, then down onto it, then close
            contact = self.waypoints[-1]
            if len(self.waypoints) > 1 and np.linalg.norm(ee[:2] - contact[:2]) > self.reach_tol_m:
                return self.waypoints[0]
            z_tol = self.grasp_z_tol_m if self.mode != "push" else self.reach_tol_m
            if self.mode == "push" and self._push_hand:
                if np.linalg.norm(ee - contact) > self.contact_m:  # a push start jitters with the object's
                    return contact  # points between plans; within contact_m the hand pushes from where it is
            elif np.linalg.norm(ee[:2] - contact[:2]) > self.reach_tol_m or abs(ee[2] - contact[2]) > z_tol:
                return contact
            self.waypoints = []
            self.in_contact = self.mode is not None
            if self.mode != "push":  # grasp (or a first touch before any plan moved the object): close,
                self.grip = CLOSED  # still pressing towards the contact point while the fingers close
                self._hold = self.close_steps
                self._hold_at = contact
                return contact
            if self._after_reach is not None:
                self._set_subgoals(self._after_reach)
                self._sub = 0
        if self.subgoals is None or len(self.subgoals) == 0:
            return None
        while self._sub < len(self.subgoals) - 1 and np.linalg.norm(self.subgoals[self._sub] - ee) <= self.precision_m:
            self._sub += 1  # reached: chase the next one (AVDC pops subgoals the same way)
        return self.subgoals[self._sub]

    def act(self, flow_plan, depth, intrinsics, cam_pose, ee_pos, step_in_plan: int = 0, object_mask=None,
            robot_mask=None, frames_per_step: int = 1, plan_id: object = None) -> np.ndarray:
        """One action (4,) in [-1, 1] for control step `step_in_plan` of the plan. A plan not seen
        before (`plan_id`, else the array's identity) is analysed on this frame first, so its first
        call must pass the frame the plan was made from."""
        if isinstance(step_in_plan, bool) or not isinstance(step_in_plan, (int, np.integer)) or step_in_plan < 0:
            raise SofError(f"step_in_plan must be a non-negative integer, got {step_in_plan!r}")
        key = plan_id if plan_id is not None else id(flow_plan)
        if key != self._plan_id or self.last_motion is None:
            self.new_plan(flow_plan, depth, intrinsics, cam_pose, ee_pos, object_mask, robot_mask, frames_per_step, key)
            self._plan_start = int(step_in_plan)
        ee = self._check_ee(ee_pos)
        if not self.last_motion.ok:
            a = self._zero(self.last_motion.reason)  # no motion without a usable plan, not even a back-off
            self._backoff = max(0, self._backoff - 1)
            self._watch_stall(ee)  # a plan that cannot be analysed, again and again from the same frame: idle
            return a
        self._watch_stall(ee)
        tgt = self.target(ee, int(step_in_plan))
        if self._hold > 0:
            self._hold -= 1
        if self._backoff > 0:
            self._backoff -= 1
        if tgt is None:  # the plan's own reason, said once (it grew by one suffix per control step)
            return self._zero(self.last_reason if self.last_reason.endswith(NO_SUBGOAL) else self.last_reason + NO_SUBGOAL)
        self.current_target = tgt
        a = np.zeros(4)
        a[:3] = np.clip(self.gain * (tgt - ee) / ACTION_SCALE_M, -1.0, 1.0)
        a[3] = self.grip
        if not np.all(np.isfinite(a)):
            return self._zero("non-finite action: zero action")
        return a

    def _watch_stall(self, ee: np.ndarray) -> None:
        """Stall (still, the subgoal far) and idle (still, nothing left to do): after `stall_steps` /
        `idle_steps` such steps in a row, back off and ask for a fresh plan."""
        moved = np.inf if self._prev_ee is None else float(np.linalg.norm(ee - self._prev_ee))
        self._prev_ee = ee.copy()
        far = self.current_target is not None and float(np.linalg.norm(self.current_target - ee)) > self.precision_m
        if self._hold > 0 or self._backoff > 0 or moved >= self.stall_m:
            self._stall = self._idle = 0  # moving, closing the gripper or backing off
            return
        if not far:  # still because the target is reached, or there is none: not a stall, maybe idle
            self._stall = 0
            self._idle += 1
            if self.idle_steps and self._idle >= self.idle_steps:
                self._ask_fresh_plan(f"idle {self.idle_steps} steps (nothing planned moves)")
            return
        self._idle = 0
        self._stall += 1
        if self._stall >= self.stall_steps:
            self._ask_fresh_plan(f"stalled {self.stall_steps} steps")

    def _ask_fresh_plan(self, why: str) -> None:
        self._stall = self._idle = 0
        self.needs_replan = True
        self.replans += 1
        self._backoff = self.backoff_steps
        self.waypoints = []
        self.last_reason = f"{why}: backing off and asking for a fresh plan"

    def _zero(self, reason: str) -> np.ndarray:
        self.last_reason = reason
        self.current_target = None
        return np.array([0.0, 0.0, 0.0, self.grip])
