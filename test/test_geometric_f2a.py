"""Learning-free Flow2Action with MetaWorld's camera model: a known object motion gives the right 3-D
subgoals, grasp and release toggle the gripper, a stall asks for a fresh (sampled) plan, and bad
plans give a safe zero with the reason."""
from pathlib import Path

import numpy as np
import pytest

from sof_ros.errors import SofError
from sof_ros.flow2action.geometric import CLOSED, OPEN, GeometricFlow2Action, motion_mask
from sof_ros.geometry import backproject, camera_to_world, project, resize_flow, world_to_camera, world_to_pixel

T_FIELDS = 4


@pytest.fixture(scope="module")
def scene():
    """One rendered MetaWorld frame (corner camera, 128x128): depth, the task object's mask (the
    button, from segmentation ids), the arm's hand mask, K, camera pose, TCP."""
    from sof_ros.sim.metaworld_env import MetaWorldArm

    arm = MetaWorldArm("button-press-topdown", camera="corner")
    try:
        obs = arm.reset(1000)
        return dict(depth=obs.depth.astype(np.float64), mask=obs.object_mask.copy(), robot=obs.robot_mask.copy(),
                    K=obs.intrinsics.copy(), P=obs.cam_pose.copy(), ee=obs.ee_pos.copy())
    finally:
        arm.close()


def rigid_plan(sc, motions: dict, res: int = 64, fields: int = T_FIELDS) -> np.ndarray:
    """Flow plan of rigid motions: the surface shown by each mask in `motions` (mask -> total world
    translation, moved the same amount per field, or a function (points, fraction of the plan) ->
    moved points) moves; everything else is still. Field k holds
    each moving point's own displacement at the pixel it occupies in frame k (dilated by a pixel,
    as a dense flow field would have it). Returned at res x res."""
    import cv2
    from scipy.spatial import cKDTree

    depth, K, P = sc["depth"], sc["K"], sc["P"]
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W]
    world = camera_to_world(P, backproject(K, np.stack([u, v], -1).astype(np.float64), depth))
    plan = np.zeros((fields, H, W, 2))
    for mask, total in motions.items():
        m = np.asarray(mask)
        if callable(total):  # (points, fraction of the plan) -> the points moved that far
            move = total
        else:
            move = lambda X, s, t=np.asarray(total, dtype=np.float64): X + s * t  # noqa: E731
        for k in range(fields):
            a, _ = world_to_pixel(K, P, move(world[m], k / fields))
            b, _ = world_to_pixel(K, P, move(world[m], (k + 1) / fields))
            at = np.zeros((H, W), np.uint8)
            ui = np.clip(np.rint(a[:, 0]).astype(int), 0, W - 1)
            vi = np.clip(np.rint(a[:, 1]).astype(int), 0, H - 1)
            at[vi, ui] = 1
            at = cv2.dilate(at, np.ones((3, 3), np.uint8)).astype(bool)
            near = cKDTree(a).query(np.stack([u[at], v[at]], 1))[1]  # each pixel: the point it shows
            plan[k][at] = (b - a)[near]
    return resize_flow(plan, res)


class M:  # hashable wrapper so a mask can key a dict
    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a


def test_known_object_lift_gives_grasp_subgoals_from_above(scene):
    lift = np.array([0.0, 0.0, 0.15])
    plan = rigid_plan(scene, {M(scene["mask"]): lift})
    s = GeometricFlow2Action()
    mot = s.new_plan(plan, scene["depth"], scene["K"], scene["P"], scene["ee"], scene["mask"], scene["robot"])
    assert mot.ok and mot.obj_moving, s.last_reason
    # the chained 3-D motion, 15 cm up, within 3.5 cm (a 7-pixel button at 64x64 flow)
    np.testing.assert_allclose(mot.obj_disp, lift, atol=0.035, err_msg=s.last_reason)
    np.testing.assert_allclose(mot.carry(mot.grasp_point)[-1] - mot.grasp_point, lift, atol=0.035)
    assert s.mode == "grasp" and s.grip == OPEN
    g = mot.grasp_point
    assert np.min(np.linalg.norm(mot.obj_points - g, axis=1)) < 0.02  # the grasp point lies on the object
    hover, grasp = s.waypoints  # above the object's centre, then down to its lower half
    np.testing.assert_allclose(grasp[:2], g[:2], atol=1e-9)
    np.testing.assert_allclose(hover, grasp + [0, 0, s.hover_m], atol=1e-9)
    z = mot.obj_points[:, 2]
    assert z.min() <= grasp[2] <= g[2] <= z.max()
    a = s.act(plan, scene["depth"], scene["K"], scene["P"], scene["ee"], 0, scene["mask"], scene["robot"], plan_id=None)
    assert np.all(np.abs(a) <= 1) and a[3] == OPEN


def test_known_planar_motion_gives_push_from_behind(scene):
    push = np.array([0.10, 0.0, 0.0])
    plan = rigid_plan(scene, {M(scene["mask"]): push})
    s = GeometricFlow2Action()  # 4 fields 4 control steps apart: 10 cm in 16 steps, within the arm's speed
    mot = s.new_plan(plan, scene["depth"], scene["K"], scene["P"], scene["ee"], scene["mask"], scene["robot"],
                     frames_per_step=4)
    np.testing.assert_allclose(mot.obj_disp, push, atol=0.035, err_msg=s.last_reason)  # 10 cm, a 7-px button
    assert s.mode == "push" and s.grip == CLOSED
    hover, start = s.waypoints  # above the start point, then down to it
    np.testing.assert_allclose(hover, start + [0, 0, s.hover_m], atol=1e-9)
    g = mot.grasp_point
    back = (g - start)[:2]
    assert back @ [1.0, 0.0] / np.linalg.norm(back) > np.cos(np.deg2rad(25))  # behind the push direction ...
    assert s.push_back_m <= np.linalg.norm(back) <= s.push_back_m + 0.03  # ... from the object's rear face
    assert g[2] - s.push_down_m - 0.01 <= start[2] <= g[2] - s.push_down_m + 0.01  # and lower (AVDC)
    # once there, the hand pushes along the object's planned motion, from its rear face
    a = s.act(plan, scene["depth"], scene["K"], scene["P"], start, 0, scene["mask"], scene["robot"], frames_per_step=4)
    assert s.in_contact and a[3] == CLOSED and a[0] > 0.05, (a, s.last_reason)


def test_flow_scale_undoes_a_plan_that_under_reports_the_motion(scene):
    """Plans learned from DIS flow carry about half the motion; flow_scale 2 reads a plan of 5 cm
    as the 10 cm it stands for, and flow_scale 1 keeps it at 5 cm."""
    push = np.array([0.10, 0.0, 0.0])
    plan = rigid_plan(scene, {M(scene["mask"]): push / 2})
    for scale, expected in ((1.0, push / 2), (2.0, push)):
        s = GeometricFlow2Action(flow_scale=scale)
        mot = s.new_plan(plan, scene["depth"], scene["K"], scene["P"], scene["ee"], scene["mask"], scene["robot"],
                         frames_per_step=4)
        np.testing.assert_allclose(mot.obj_disp, expected, atol=0.02, err_msg=s.last_reason)
    with pytest.raises(SofError, match="flow_scale must be a positive number"):
        GeometricFlow2Action(flow_scale=0.0)


def _pushing(scene, **solver_args):
    """A solver whose hand reached the start of a 10 cm push along +x (in contact), the plan that
    shows the object still, and a function analysing a plan made with the hand at `ee`."""
    push, still = (rigid_plan(scene, {M(scene["mask"]): m}) for m in ([0.10, 0.0, 0.0], [0, 0, 0]))
    s = GeometricFlow2Action(**solver_args)

    def see(plan, ee):
        return s.new_plan(plan, scene["depth"], scene["K"], scene["P"], ee, scene["mask"], scene["robot"],
                          frames_per_step=4)

    see(push, scene["ee"])
    start = s.waypoints[-1].copy()
    s.act(push, scene["depth"], scene["K"], scene["P"], start, 0, scene["mask"], scene["robot"], frames_per_step=4)
    assert s.in_contact and s.mode == "push", s.last_reason
    return s, still, start, see


@pytest.mark.parametrize("lost_contact_m", [0.0, 0.15])
def test_a_hand_carried_off_a_pushed_object_approaches_it_again(scene, lost_contact_m):
    """Plans that show the pushed object still hold a hand that is at it; a hand a plan carried
    over 20 cm away held there for the rest of the episode (traced on button-press-topdown), unless
    lost_contact_m (0 = off) names it out of contact, and then it approaches the object again."""
    s, still, start, see = _pushing(scene, lost_contact_m=lost_contact_m)
    see(still, start)
    assert s.in_contact and s.last_reason == "object still in the plan: holding"  # at the object: wait
    away = start + np.array([0.10, 0.0, 0.35])
    mot = see(still, away)
    assert np.linalg.norm(mot.obj_points - away, axis=1).min() > 0.2
    if lost_contact_m == 0:
        assert s.in_contact and s.last_reason == "object still in the plan: holding"
        np.testing.assert_allclose(s.target(away, 0), away)
    else:
        assert not s.in_contact and s.last_reason.startswith("push along"), s.last_reason
        assert s._push_dir @ [1.0, 0.0, 0.0] > 0.9  # the kept direction
        np.testing.assert_allclose(s.waypoints[-1], start, atol=0.03)  # back to where the push starts
        assert np.linalg.norm(s.target(away, 0) - away) > 0.1
    with pytest.raises(SofError, match="lost_contact_m"):
        GeometricFlow2Action(lost_contact_m=-0.1)


@pytest.mark.parametrize("push_on_m", [0.0, 0.05])
def test_a_hand_in_contact_pushes_on_when_the_plan_shows_the_object_still(scene, push_on_m):
    """push_on_m (0 = off): a hand at the object it pushes goes on along the kept direction when a
    plan shows the object still (traced: a door-close hand held at the push start for 450 steps)."""
    s, still, start, see = _pushing(scene, push_on_m=push_on_m)
    see(still, start)
    np.testing.assert_allclose(s.target(start, 0), start + push_on_m * s._push_dir, atol=1e-9)
    assert s.in_contact and ("pushing on" in s.last_reason) == (push_on_m > 0), s.last_reason
    if push_on_m:
        a = s.act(still, scene["depth"], scene["K"], scene["P"], start, 1, scene["mask"], scene["robot"],
                  frames_per_step=4)
        assert a[0] > 0.5 and a[3] == CLOSED, a  # on along +x, the fist closed
    with pytest.raises(SofError, match="push_on_m"):
        GeometricFlow2Action(push_on_m=float("nan"))


def test_one_plan_turning_the_push_round_does_not_turn_the_arm(scene):
    """A door's planar points give PnP fits that alternate between a sideways and an upward push; the
    arm used to chase both approach points in turn. A direction is kept until push_turn_plans plans
    in a row turn it by more than push_turn_deg."""
    args = (scene["depth"], scene["K"], scene["P"], scene["ee"], scene["mask"], scene["robot"])
    side = rigid_plan(scene, {M(scene["mask"]): [0.10, 0, 0]})
    up = rigid_plan(scene, {M(scene["mask"]): [0, 0, 0.10]})
    s = GeometricFlow2Action(push_turn_deg=60, push_turn_plans=3)
    s.new_plan(side, *args, frames_per_step=4, plan_id=0)
    start = s.waypoints[-1].copy()
    assert s.mode == "push" and s._push_dir[0] > 0.9
    for i in (1, 2):  # one and two plans turning it: kept, the approach unchanged
        s.new_plan(up, *args, frames_per_step=4, plan_id=i)
        assert "kept" in s.last_reason and s._push_dir[0] > 0.9, s.last_reason
        np.testing.assert_allclose(s.waypoints[-1], start, atol=0.03)
    s.new_plan(up, *args, frames_per_step=4, plan_id=3)  # the third in a row: the plan has changed its mind
    assert "kept" not in s.last_reason and s._push_dir[2] > 0.9, s.last_reason
    s = GeometricFlow2Action(push_turn_deg=180)  # the rule off: every plan's direction is followed
    s.new_plan(side, *args, frames_per_step=4, plan_id=0)
    s.new_plan(up, *args, frames_per_step=4, plan_id=1)
    assert s._push_dir[2] > 0.9, s.last_reason


@pytest.mark.parametrize("large", [False, True])
def test_plans_that_lift_the_object_turn_a_push_into_a_grasp(scene, large):
    """Traced on basketball and shelf-place with predicted plans: the first plan, made with the hand
    far away, shows the ball sinking into the table, which fixes a push; every later plan made with
    the hand at the ball lifts it. push_to_grasp_plans plans in a row that lift a small object turn
    the push into a grasp; a large object (door, faucet) stays pushed; 0 keeps the first plan's mode."""
    args = (scene["depth"], scene["K"], scene["P"], scene["ee"], scene["mask"], scene["robot"])
    down = rigid_plan(scene, {M(scene["mask"]): [0.05, 0, -0.05]})
    up = rigid_plan(scene, {M(scene["mask"]): [0, 0, 0.10]})
    s = GeometricFlow2Action(push_to_grasp_plans=2, push_turn_plans=1, large_object_m=0.0 if large else 1.0)
    s.new_plan(down, *args, frames_per_step=4, plan_id=0)
    assert s.mode == "push" and s.grip == CLOSED, s.last_reason
    s.new_plan(up, *args, frames_per_step=4, plan_id=1)  # one lifting plan: still a push
    assert s.mode == "push", s.last_reason
    s.new_plan(down, *args, frames_per_step=4, plan_id=2)  # a plan that does not lift starts the count again
    s.new_plan(up, *args, frames_per_step=4, plan_id=3)
    assert s.mode == "push", s.last_reason
    s.new_plan(up, *args, frames_per_step=4, plan_id=4)  # the second in a row
    if large:
        assert s.mode == "push", s.last_reason
        return
    assert s.mode == "grasp" and s.grip == OPEN and not s.in_contact, s.last_reason
    assert "a grasp, not a push" in s.last_reason, s.last_reason
    hover, grasp = s.waypoints  # from above the object, as a grasp decided by the first plan
    np.testing.assert_allclose(hover, grasp + [0, 0, s.hover_m], atol=1e-9)
    s = GeometricFlow2Action()  # off (the default): the first plan's mode stays
    for i, plan in enumerate((down, up, up, up)):
        s.new_plan(plan, *args, frames_per_step=4, plan_id=i)
    assert s.mode == "push", s.last_reason
    with pytest.raises(SofError, match="push_to_grasp_plans must be a whole number"):
        GeometricFlow2Action(push_to_grasp_plans=-1)


@pytest.mark.parametrize("large", [True, False])
def test_a_large_object_is_pushed_from_where_the_hand_is(scene, large):
    """For an object over large_object_m across, a hand within contact_m of the push start pushes
    from there, by the contact point's planned motion (a large object's rear point jitters between
    plans and sent the hand back before each push); a small object is pushed from its rear point."""
    push = np.array([0.10, 0.0, 0.0])
    plan = rigid_plan(scene, {M(scene["mask"]): push})
    s = GeometricFlow2Action(large_object_m=0.0 if large else 1.0)  # the button counts as large / small
    s.new_plan(plan, scene["depth"], scene["K"], scene["P"], scene["ee"], scene["mask"], scene["robot"], frames_per_step=4)
    ee = s.waypoints[-1] + [0.0, 0.03, 0.02]  # 3.6 cm from the start, low (not above the hover height)
    s.reset()  # the first plan seen from there
    args = (scene["depth"], scene["K"], scene["P"], ee)
    s.new_plan(plan, *args, scene["mask"], scene["robot"], frames_per_step=4, plan_id="near")
    a = s.act(plan, *args, 0, scene["mask"], scene["robot"], frames_per_step=4, plan_id="near")
    if not large:  # to the start point exactly (the hover first: it is not low enough to skip it)
        assert not s.in_contact and len(s.waypoints) == 2 and a[2] > 0, (a, s.last_reason)
        return
    assert s.in_contact and a[3] == CLOSED, s.last_reason
    s.new_plan(plan, *args, scene["mask"], scene["robot"], frames_per_step=4, plan_id="pushing")
    assert "pushing" in s.last_reason, s.last_reason
    moved = s.subgoals[-1] - ee
    np.testing.assert_allclose(moved[1:], 0.0, atol=0.035)  # by the planned motion, from where the hand is
    assert push[0] - 0.035 <= moved[0] <= push[0] + s.push_back_m + 0.035  # (plus any gap to the object's face)


def _closed_on_the_object(scene, **solver_args):
    """A solver whose gripper has closed on the button at its grasp point g: (solver, g, lift plan)."""
    s = GeometricFlow2Action(**solver_args)
    lift = rigid_plan(scene, {M(scene["mask"]): [0, 0, 0.15]})
    g = s.new_plan(lift, scene["depth"], scene["K"], scene["P"], scene["ee"], scene["mask"], scene["robot"]).grasp_point
    s = GeometricFlow2Action(**solver_args)  # the hand at the grasp point (the TCP is simply reported there)
    s.new_plan(lift, scene["depth"], scene["K"], scene["P"], g, scene["mask"], None, plan_id="at-object")
    for step in range(s.close_steps + 1):
        s.act(lift, scene["depth"], scene["K"], scene["P"], g, step, scene["mask"], None, plan_id="at-object")
    assert s.grip == CLOSED and s.in_contact, s.last_reason
    return s, g, lift


@pytest.mark.parametrize("carry_with", ["hand", "object", "auto"])
def test_a_held_object_is_carried_along_the_hands_own_track(scene, carry_with):
    """Held, the hand follows its own planned track ("hand"), or the object's fitted motion ("object";
    "auto" while that keeps the hand above where it grasped). The plan moves the hand 10 cm up and the
    object 10 cm up and 8 cm sideways: "hand" follows the hand's track, "object" and "auto" (the object
    stays above the grasp) do not."""
    s, g, _ = _closed_on_the_object(scene, carry_with=carry_with)
    u, v = np.mgrid[0:128, 0:128]
    px = project(scene["K"], world_to_camera(scene["P"], g)[None])[0]
    hand = ((u - px[0]) ** 2 + (v - px[1]) ** 2 <= 36) & ~scene["mask"]
    both = rigid_plan(scene, {M(scene["mask"]): [0.08, 0, 0.10], M(hand): [0, 0, 0.10]}, fields=8)
    s.new_plan(both, scene["depth"], scene["K"], scene["P"], g, scene["mask"], hand, plan_id="held")
    assert "carries it" in s.last_reason, s.last_reason
    off = np.linalg.norm(s.subgoals[-1] - g - [0, 0, 0.10])
    assert off < 0.03 if carry_with == "hand" else off > 0.03, (s.subgoals[-1] - g, s.last_reason)


def test_auto_carry_takes_the_hands_track_only_when_the_objects_fit_sinks_below_the_grasp(scene):
    """"auto": shelf-place's puck is placed best by its own fit, but assembly's wrench, hidden under the
    fingers, was fitted decimetres into the table; a fit that takes the hand below where it grasped
    (less grasp_z_tol_m) gives way to the hand's own track."""
    from sof_ros.flow2action.geometric import PlanMotion

    s, g, _ = _closed_on_the_object(scene, carry_with="auto")
    hand_up = np.linspace(0, 1, 5)[:, None] * [0.0, 0.0, 0.08]

    def held_plan(obj_move):
        obj_T = np.tile(np.eye(4), (5, 1, 1))
        obj_T[:, :3, 3] = np.linspace(0, 1, 5)[:, None] * obj_move
        return PlanMotion(True, "test", np.arange(5), g[None] + [[0, 0, 0.01]], obj_T, True, np.asarray(obj_move),
                          hand_up, True, g)

    s._plan_grasp(held_plan([0.06, 0.0, 0.02]), g, g)  # the object's fit stays above the grasp: followed
    np.testing.assert_allclose(s.subgoals[-1], g + [0.06, 0.0, 0.02])
    why = s._plan_grasp(held_plan([0.06, 0.0, -0.30]), g, g)  # sinks 30 cm: the hand's own track
    np.testing.assert_allclose(s.subgoals[-1], g + [0.0, 0.0, 0.08])
    assert "its own track" in why, why


def test_the_hands_planned_track_is_no_faster_than_the_arm_along_the_viewing_ray(scene):
    """The hand's track comes from the same speed-bounded fit as the object's: along the viewing ray one
    camera sees motion only as a change of scale, and an unbounded fit of the hand's points once put it
    over a metre off along the ray in one 8-step plan. Across the ray the plan is followed."""
    s = GeometricFlow2Action()
    u, v = np.mgrid[0:128, 0:128]
    px = project(scene["K"], world_to_camera(scene["P"], scene["ee"])[None])[0]
    hand = ((u - px[0]) ** 2 + (v - px[1]) ** 2 <= 36) & ~scene["mask"]
    ray = scene["ee"] - scene["P"][:3, 3]
    ray /= np.linalg.norm(ray)
    fast = rigid_plan(scene, {M(hand): 0.30 * ray})  # 7.5 cm per field; the arm moves at most 1.5 cm
    mot = s.analyse(fast, scene["depth"], scene["K"], scene["P"], scene["ee"], scene["mask"], hand)
    assert mot.hand_disp is not None, mot.reason
    per_field = np.linalg.norm(np.diff(mot.hand_disp, axis=0), axis=1)
    assert per_field.max() <= s.max_speed_m + 1e-6, per_field
    slow = rigid_plan(scene, {M(hand): [0, 0, 0.04]})  # 1 cm per field, across the ray: as planned
    mot = s.analyse(slow, scene["depth"], scene["K"], scene["P"], scene["ee"], scene["mask"], hand)
    np.testing.assert_allclose(mot.hand_disp[-1], [0, 0, 0.04], atol=0.015)


def test_a_held_object_is_fitted_as_translating_with_the_hand(scene):
    """held_motion="translation" (an option; the default fits SE(3) as for any object): the solver
    commands the hand's position only, so once a held object hangs in the hand (seen lifted; a door
    or a faucet handle turns about its hinge instead) its fit is a translation, and a rotation in a
    poorly seen object's fit cannot swing the carried hand about. Here the plan turns the held object
    40 degrees about a vertical axis through its centre while lifting it 8 cm: the hand is carried
    up, not round."""
    s, g, _ = _closed_on_the_object(scene, held_motion="translation")
    s.lifted = True  # seen lifted before (the slipped-object test drives that detection)
    c = g  # the hand is at the grasp point, near the object's centre
    th = np.radians(40.0)

    def turn_and_lift(X, f):
        ct, st = np.cos(th * f), np.sin(th * f)
        R = np.array([[ct, -st, 0.0], [st, ct, 0.0], [0.0, 0.0, 1.0]])
        return (X - c) @ R.T + c + f * np.array([0.0, 0.0, 0.08])

    plan = rigid_plan(scene, {M(scene["mask"]): turn_and_lift}, fields=8)
    mot = s.new_plan(plan, scene["depth"], scene["K"], scene["P"], g, scene["mask"], None, plan_id="turned")
    assert mot.obj_moving and "carries it" in s.last_reason, s.last_reason
    np.testing.assert_allclose(mot.obj_T[:, :3, :3], np.tile(np.eye(3), (9, 1, 1)), atol=1e-9)
    np.testing.assert_allclose(s.subgoals[-1] - g, [0.0, 0.0, 0.08], atol=0.03)


def test_grasp_then_release_toggle_the_gripper(scene):
    s = GeometricFlow2Action(carry_with="object")
    lift = rigid_plan(scene, {M(scene["mask"]): [0, 0, 0.15]})
    g = s.new_plan(lift, scene["depth"], scene["K"], scene["P"], scene["ee"], scene["mask"], scene["robot"]).grasp_point
    # the hand at the grasp point when the plan lifts the object (the TCP is simply reported there)
    s = GeometricFlow2Action(carry_with="object")  # held: carried by the object's motion (no hand in this plan)
    s.new_plan(lift, scene["depth"], scene["K"], scene["P"], g, scene["mask"], None, plan_id="at-object")
    assert s.grip == OPEN and s.mode == "grasp", s.last_reason
    a = s.act(lift, scene["depth"], scene["K"], scene["P"], g, 0, scene["mask"], None, plan_id="at-object")
    # closes, pressing on down to the object's lower half (no sideways motion) while the fingers close
    assert a[3] == CLOSED and s.in_contact and np.all(np.abs(a[:2]) < 1e-6) and a[2] <= 0, a
    for step in range(1, s.close_steps + 1):
        a = s.act(lift, scene["depth"], scene["K"], scene["P"], g, step, scene["mask"], None, plan_id="at-object")
    # closed: the next plan carries the hand with the object, 15 cm up
    s.new_plan(lift, scene["depth"], scene["K"], scene["P"], g, scene["mask"], None, plan_id="held")
    np.testing.assert_allclose(s.subgoals[-1] - g, [0, 0, 0.15], atol=0.035)
    a = s.act(lift, scene["depth"], scene["K"], scene["P"], g, 0, scene["mask"], None, plan_id="held")
    assert a[3] == CLOSED and a[2] > 0.05
    # a plan in which the hand leaves a still object: release
    u, v = np.mgrid[0:128, 0:128]
    hand = np.zeros((128, 128), bool)
    hand[:, :] = False
    px = project(scene["K"], world_to_camera(scene["P"], g)[None])[0]
    hand = (u - px[0]) ** 2 + (v - px[1]) ** 2 <= 36
    hand &= ~scene["mask"]
    away = rigid_plan(scene, {M(hand): [0, 0, 0.10]})
    s.new_plan(away, scene["depth"], scene["K"], scene["P"], g + [0, 0, 0.03], scene["mask"], hand, plan_id="leave")
    assert s.grip == OPEN and not s.in_contact, s.last_reason


def test_a_lifted_object_that_slipped_out_of_the_hand_is_grasped_again(scene):
    """A lifted object hangs in the hand: one seen drop_m or more from the hand has slipped out (a
    hammer on a fast lift), and holding still with a closed empty gripper would wait out the episode,
    so the solver opens and approaches it again. A handle that was never seen lifted (a faucet, a door
    taken for a grasp) is not dropped: the hand left it on a mis-fitted carry."""
    still = np.zeros((T_FIELDS, 64, 64, 2))
    for lifted in (False, True):
        s, g, _ = _closed_on_the_object(scene)
        up = g + [0.0, 0.0, 0.25]  # the hand 25 cm above an object on the table
        s.new_plan(still, scene["depth"], scene["K"], scene["P"], g, scene["mask"], None, plan_id="at-hand")
        assert s.grip == CLOSED and s.in_contact and "holding" in s.last_reason, s.last_reason
        if lifted:  # the next frame shows the object, in the hand, 30 cm nearer the camera (which looks down
            seen = np.where(scene["mask"], scene["depth"] - 0.30, scene["depth"])  # on it): 6 cm higher
            v, u = np.nonzero(scene["mask"])
            at = camera_to_world(scene["P"], backproject(scene["K"], np.stack([u, v], 1).astype(float), seen[v, u]))
            s.new_plan(still, seen, scene["K"], scene["P"], at.mean(axis=0), scene["mask"], None, plan_id="up")
            assert s.lifted and s.in_contact, s.last_reason
        s.new_plan(still, scene["depth"], scene["K"], scene["P"], up, scene["mask"], None, plan_id="away")
        if not lifted:
            assert s.grip == CLOSED and s.in_contact and not s.last_reason.startswith("dropped"), s.last_reason
    assert s.grip == OPEN and not s.in_contact and s.last_reason.startswith("dropped"), s.last_reason
    assert s.waypoints and np.linalg.norm(s.waypoints[-1][:2] - g[:2]) < 0.02, s.waypoints
    a = s.act(still, scene["depth"], scene["K"], scene["P"], up, 0, scene["mask"], None, plan_id="away")
    assert a[3] == OPEN and np.linalg.norm(a[:3]) > 0.1, a  # on its way back, open


def test_stall_asks_for_a_fresh_plan(scene):
    s = GeometricFlow2Action(stall_steps=15)
    plan = rigid_plan(scene, {M(scene["robot"]): [0.08, 0, 0]})
    for step in range(16):  # the arm does not move although the plan moves the hand
        s.act(plan, scene["depth"], scene["K"], scene["P"], scene["ee"], step, scene["mask"], scene["robot"], plan_id=1)
    assert s.needs_replan and s.replans == 1, s.last_reason
    assert "stalled" in s.last_reason
    for step in range(16, 30):  # backed off, the approach dropped: nothing to chase until the fresh plan
        a = s.act(plan, scene["depth"], scene["K"], scene["P"], scene["ee"], step, scene["mask"], scene["robot"],
                  plan_id=1)
    assert np.all(a[:3] == 0) and s.last_reason.count("no subgoal") == 1, s.last_reason  # said once, not per step


@pytest.mark.parametrize("case", ["holding", "unusable_plan"])
def test_an_arm_left_idle_asks_for_a_fresh_plan(scene, case):
    """A plan that shows a still object from a still frame held the arm still for the rest of the
    episode (the same frame gives the same greedy plan): idle_steps ends that, and 0 keeps it off."""
    still = rigid_plan(scene, {M(scene["mask"]): [0, 0, 0]})
    plan = np.full_like(still, np.nan) if case == "unusable_plan" else still

    def run(idle_steps, steps, ee=scene["ee"]):
        s = GeometricFlow2Action(idle_steps=idle_steps)
        s.mode, s.in_contact, s.grip = "push", True, CLOSED  # at the object, pushing, as the plan stopped
        fired = []
        for step in range(steps):
            s.act(plan, scene["depth"], scene["K"], scene["P"], ee(step) if callable(ee) else ee, step,
                  scene["mask"], scene["robot"], plan_id=1)
            fired.append(s.needs_replan)
        return s, fired

    s, fired = run(0, 100)
    assert not any(fired) and s.replans == 0, s.last_reason  # off: the old behaviour, held for good
    want = "NaN" if case == "unusable_plan" else "holding"
    assert want in s.last_reason, s.last_reason
    s, fired = run(20, 21)  # the first step has no previous position to compare with
    assert fired.index(True) == 20 and s.replans == 1 and s.last_reason.startswith("idle 20 steps"), s.last_reason
    # an arm that is moving is not idle, whatever the plan says
    s, fired = run(20, 40, ee=lambda k: scene["ee"] + np.array([0.002 * k, 0, 0]))
    assert not any(fired), s.last_reason


def test_policy_samples_a_fresh_plan_after_a_stall():
    """SofLearningFreePolicy.plan: greedy normally, temperature > 0 once the solver reports a stall."""
    import torch

    from sof_ros.policies.learning_free import SofLearningFreePolicy

    from sof_ros.config import load_config

    seen = []
    cfg = load_config(None)  # the default (v1) recipe: Stage 2 without proprioception, stride 1

    class Gen(torch.nn.Module):
        def generate(self, img, text, proprio=None, temperature=0.0, generator=None):
            seen.append(temperature)
            return torch.zeros((1, 4), dtype=torch.long)

    class Dec(torch.nn.Module):
        def decode_ids(self, ids, img):
            return torch.zeros((1, 8, 32, 32, 2))

    pol = SofLearningFreePolicy.__new__(SofLearningFreePolicy)
    pol.cfg, pol.models, pol.device = cfg, {"policy": Gen(), "skill": Dec()}, "cpu"
    pol._gen = torch.Generator()
    pol.text = lambda s: np.zeros(384, np.float32)
    pol.solver = GeometricFlow2Action()
    from sof_ros.policies import AgentInput

    obs = AgentInput(rgb=np.zeros((128, 128, 3), np.uint8))
    pol.plan(obs, "press the button")
    pol.solver.needs_replan = True
    plan = pol.plan(obs, "press the button")
    assert seen[0] == 0.0 and seen[1] > 0.0
    assert plan.flow.shape == (8, 32, 32, 2) and plan.frames_per_step == cfg.skill.stride == 1
    # the ROS graph: the stall happened in Flow2Action's copy of the agent, which said so on its topic
    pol.solver.needs_replan = False
    assert not pol.wants_fresh_plan
    pol.request_fresh_plan()
    pol.plan(obs, "press the button")
    pol.plan(obs, "press the button")
    assert seen[2] > 0.0 and seen[3] == 0.0  # one request, one sampled plan


def test_policy_plans_the_medoid_of_several_plans():
    """eval.plan_samples > 1: the greedy plan and sampled ones; the plan the others are closest to is
    returned whole (its tokens and its flow), the greedy one when they agree."""
    import torch

    from sof_ros.config import load_config
    from sof_ros.policies import AgentInput
    from sof_ros.policies.learning_free import SofLearningFreePolicy, plan_medoid

    calls = []
    cfg = load_config(None)
    cfg.eval.plan_samples, cfg.eval.plan_sample_temperature = 3, 0.7

    class Gen(torch.nn.Module):
        def generate(self, img, text, proprio=None, temperature=0.0, generator=None):
            calls.append((len(img), temperature))
            first = [10] if temperature == 0 else [1, 2]  # greedy is the outlier here
            return torch.tensor([[t, 0, 0, 0] for t in first], dtype=torch.long)

    class Dec(torch.nn.Module):
        def decode_ids(self, ids, img):
            assert len(img) == len(ids)
            return ids[:, 0].float().reshape(-1, 1, 1, 1, 1).expand(len(ids), 8, 32, 32, 2).clone()

    pol = SofLearningFreePolicy.__new__(SofLearningFreePolicy)
    pol.cfg, pol.models, pol.device = cfg, {"policy": Gen(), "skill": Dec()}, "cpu"
    pol._gen = torch.Generator()
    pol.text = lambda s: np.zeros(384, np.float32)
    pol.solver = GeometricFlow2Action()
    plan = pol.plan(AgentInput(rgb=np.zeros((128, 128, 3), np.uint8)), "press the button")
    assert calls == [(1, 0.0), (2, 0.7)]
    assert plan.tokens.tolist() == [2, 0, 0, 0] and np.all(plan.flow == 2.0)
    assert plan_medoid(torch.zeros(4, 3, 2)) == 0  # all agree: the greedy plan
    assert plan_medoid(torch.tensor([[0.0], [5.0], [6.0], [7.0], [8.0]])) == 2


def test_plan_sampling_is_part_of_the_protocol(tmp_path):
    """Episodes planned on the medoid of several plans (or with temporal ensembling) never mix with
    greedy (plain) ones in a work directory."""
    from sof_ros.config import load_config
    from sof_ros.eval import open_work, protocol_of

    cfg = load_config(None)
    assert "plan_samples" not in protocol_of(cfg)  # greedy: as every results file before the option
    open_work(tmp_path, protocol_of(cfg))
    cfg.eval.plan_samples = 8
    assert protocol_of(cfg)["plan_samples"] == [8, 1.0]
    with pytest.raises(SofError, match="another protocol.*plan_samples"):
        open_work(tmp_path, protocol_of(cfg))
    cfg.eval.plan_samples, cfg.eval.ensemble = 1, 0.5  # temporal ensembling of the learned rows: the same
    assert protocol_of(cfg)["ensemble"] == 0.5
    with pytest.raises(SofError, match="another protocol.*ensemble"):
        open_work(tmp_path, protocol_of(cfg))


def test_bad_plan_sampling_settings_are_named(tmp_path):
    import shutil

    import yaml

    from sof_ros.policies import load_policy

    src = Path(__file__).resolve().parents[1] / "models" / "sof_metaworld_v2"
    for bad, match in (({"plan_samples": 0}, "plan_samples must be a whole number"),
                       ({"plan_samples": 4, "plan_sample_temperature": 0.0}, "plan_sample_temperature")):
        ckpt = tmp_path / str(len(list(tmp_path.iterdir())))
        shutil.copytree(src, ckpt)
        cfg = yaml.safe_load((ckpt / "config.yaml").read_text())
        cfg["eval"].update(bad)
        (ckpt / "config.yaml").write_text(yaml.safe_dump(cfg))
        with pytest.raises(SofError, match=match):
            load_policy("sof_learning_free", str(ckpt), "cpu", None, task="button-press")


@pytest.mark.parametrize("case", ["nan", "empty", "out_of_view", "no_depth", "no_object_no_hand"])
def test_bad_plans_give_a_safe_zero_with_the_reason(scene, case):
    s = GeometricFlow2Action()
    plan = rigid_plan(scene, {M(scene["mask"]): [0, 0, 0.1]})
    depth, ee, mask, robot = scene["depth"], scene["ee"], scene["mask"], scene["robot"]
    want = {"nan": "NaN", "empty": "empty", "out_of_view": "outside the image", "no_depth": "no valid depth",
            "no_object_no_hand": "no hand points"}[case]
    if case == "nan":
        plan = np.full_like(plan, np.nan)
    elif case == "empty":
        plan = plan[:0]
    elif case == "out_of_view":
        ee = ee + np.array([5.0, 0, 0])
    elif case == "no_depth":
        depth = np.full_like(depth, np.nan)
    else:
        mask, robot = np.zeros_like(mask), np.zeros_like(robot)
        ee = ee + np.array([0, 0, 0.3])  # nothing of the arm around the TCP either
    a = s.act(plan, depth, scene["K"], scene["P"], ee, 0, mask, robot, plan_id=case)
    assert np.all(a[:3] == 0) and np.all(np.isfinite(a)) and a[3] == OPEN
    assert want in s.last_reason, s.last_reason


def test_motion_mask_finds_the_moving_object_and_not_the_arm(scene):
    plan = rigid_plan(scene, {M(scene["mask"]): [0.12, 0, 0], M(scene["robot"]): [0.12, 0, 0]})
    m = motion_mask(plan, scene["depth"], scene["K"], scene["P"], scene["ee"], scene["robot"])
    assert (m & scene["mask"]).sum() >= 0.5 * scene["mask"].sum()
    assert (m & scene["robot"]).sum() == 0


def test_malformed_inputs_are_clear_errors(scene):
    s = GeometricFlow2Action()
    plan = rigid_plan(scene, {M(scene["mask"]): [0, 0, 0.1]})
    depth, K, P, ee = scene["depth"], scene["K"], scene["P"], scene["ee"]
    with pytest.raises(SofError, match="flow_plan must be"):
        s.act(plan[..., 0], depth, K, P, ee)
    with pytest.raises(SofError, match="depth is missing"):
        s.act(plan, None, K, P, ee)
    with pytest.raises(SofError, match="intrinsics"):
        s.act(plan, depth, np.eye(2), P, ee)
    bad = P.copy()
    bad[:3, :3] *= 2
    with pytest.raises(SofError, match="rotation"):
        s.act(plan, depth, K, bad, ee)
    with pytest.raises(SofError, match="ee_pos"):
        s.act(plan, depth, K, P, np.array([np.nan, 0, 0]))
    with pytest.raises(SofError, match="frames_per_step"):
        s.act(plan, depth, K, P, ee, frames_per_step=0)
    with pytest.raises(SofError, match="object mask"):
        s.act(plan, depth, K, P, ee, object_mask=np.ones((3, 3), bool))


def test_the_oracle_row_presses_a_button_from_ground_truth_plans():
    """The oracle row end to end on MetaWorld (corner camera, simulator masks and depth): the scripted
    expert's future runs on a snapshot of the simulator that is restored exactly, its ground-truth flow
    is the plan, and the solver, re-planning every two of the plan's fields, presses the button."""
    pytest.importorskip("metaworld")
    from sof_ros.eval import eval_config, rollout
    from sof_ros.policies import load_policy
    from sof_ros.policies.learning_free import ORACLE_REPLAN_EVERY
    from sof_ros.sim import make_arm

    ckpt = str(Path(__file__).resolve().parents[1] / "models" / "sof_metaworld")
    policy = load_policy("sof_learning_free_oracle", ckpt, "cpu", None, task="button-press-topdown")
    assert policy.replan_every == ORACLE_REPLAN_EVERY == 2 * policy.frames_per_step
    arm = make_arm("button-press-topdown", eval_config(ckpt, None).sim, camera="corner", with_depth=True)
    obs = arm.reset(500)
    qpos, qvel = arm.data.qpos.copy(), arm.data.qvel.copy()
    plan = policy.plan(obs.agent_input(), arm.instruction)
    assert np.array_equal(arm.data.qpos, qpos) and np.array_equal(arm.data.qvel, qvel)  # the future was a copy
    assert plan.flow.shape[0] == policy.fields and np.isfinite(plan.flow).any()
    success, steps, _, _ = rollout(arm, 500, 200, policy)
    assert success, f"not pressed in {steps} steps: {policy.last_reason}"


def test_the_shipped_v2_skills_press_a_button_through_the_learning_free_row():
    """models/sof_metaworld_v2 (the v2 recipe's Stages 1-2, learned from three cameras of videos, no
    action labels) plans, and the geometric solver turns its predicted plans into a button press:
    the learning-free row end to end, as sof-eval runs it (button-press, corner, held-out seeds of
    the protocol, all three pressed there within 80 steps). Two of three are asked for, so one
    greedy token decided differently by another CPU's arithmetic does not fail the test; v1's
    8-step 32x32 plans press this button in 1 of 15 protocol episodes."""
    pytest.importorskip("metaworld")
    from sof_ros.eval import eval_config, rollout
    from sof_ros.policies import load_policy
    from sof_ros.sim import make_arm

    ckpt = str(Path(__file__).resolve().parents[1] / "models" / "sof_metaworld_v2")
    policy = load_policy("sof_learning_free", ckpt, "cpu", None, task="button-press")
    assert policy.replan_every == 16  # the checkpoint's own interval (config.yaml eval.replan_every)
    assert policy.solver.idle_steps == 24  # the row's watchdog on a still arm; sof-eval --solver idle_steps=0 turns it off
    assert load_policy("sof_learning_free", ckpt, "cpu", None, task="button-press",
                       solver={"idle_steps": 0}).solver.idle_steps == 0
    assert load_policy("sof_learning_free", ckpt, "cpu", None, task="button-press").solver.idle_steps == 24  # not kept
    with pytest.raises(SofError, match="row 'sof' runs no geometric solver"):
        load_policy("sof", ckpt, "cpu", None, solver={"idle_steps": 0})
    arm = make_arm("button-press", eval_config(ckpt, None).sim, camera="corner", with_depth=True)
    plan = policy.plan(arm.reset(1000).agent_input(), arm.instruction)
    assert plan.flow.shape == (16, 64, 64, 2) and plan.frames_per_step == 2  # 32 control steps ahead
    pressed = [rollout(arm, seed, 150, policy)[0] for seed in (1000, 1001, 1002)]
    arm.close()
    assert sum(pressed) >= 2, f"pressed in {pressed}; last reason: {policy.last_reason}"


def test_sof_eval_solver_settings_reach_the_solver_and_the_protocol(tmp_path, monkeypatch):
    """sof-eval --solver: the learning-free row is built with the settings, the work directory's
    protocol records them (a run with other settings is refused there), the table states them, and a
    combined table keeps each row's own."""
    pytest.importorskip("metaworld")
    import json

    from sof_ros.eval import combine, main as eval_main, markdown
    from sof_ros.flow2action import geometric
    from sof_ros.policies import learning_free

    import functools

    built = []
    real_init = geometric.GeometricFlow2Action.__init__

    @functools.wraps(real_init)  # sof-eval reads the solver's settings off its signature
    def spy(self, **kw):
        built.append(kw)
        real_init(self, **kw)

    monkeypatch.setattr(learning_free.GeometricFlow2Action, "__init__", spy)
    ckpt = str(Path(__file__).resolve().parents[1] / "models" / "sof_metaworld")
    base = ["--checkpoint", ckpt, "--rows", "sof_learning_free_oracle", "--tasks", "button-press-topdown",
            "--cameras", "corner", "--episodes", "1", "--max-steps", "2", "--work", str(tmp_path / "w")]
    eval_main(base + ["--solver", "gain=0.3", "held_motion=translation", "--out", str(tmp_path / "a.json")])
    assert built and all(kw == {"gain": 0.3, "held_motion": "translation"} for kw in built)
    protocol = json.loads((tmp_path / "w" / "protocol.json").read_text())
    assert protocol["solver"] == {"gain": 0.3, "held_motion": "translation"}
    assert "learning-free solver settings gain=0.3, held_motion=translation" in (tmp_path / "a.md").read_text()
    with pytest.raises(SystemExit):  # the default solver into the same work directory
        eval_main(base + ["--out", str(tmp_path / "b.json")])
    other = ["--rows", "sof_learning_free"] + base[4:-1] + [str(tmp_path / "w2"), "--out", str(tmp_path / "b.json")]
    eval_main(["--checkpoint", ckpt] + other)
    # each learning-free row keeps the settings it was measured with, so one table may hold rows of
    # different settings (a new solver default measured beside an older row) and says which is which
    res = combine([tmp_path / "a.json", tmp_path / "b.json"])
    assert "solver" not in res["protocol"]
    assert res["rows"]["sof_learning_free_oracle"]["solver"] == {"gain": 0.3, "held_motion": "translation"}
    assert res["rows"]["sof_learning_free"]["solver"] == {}
    text = markdown({**res, "command": "sof-eval --combine a.json b.json", "commit": "x", "machine": "m"})
    assert "| gain=0.3, held_motion=translation | `" in text and "| the row's defaults | `" in text, text


def test_sof_eval_config_settings_reach_the_policy_and_the_protocol(tmp_path, monkeypatch):
    """An `eval` key of sof-eval --config that a policy reads at run time (temporal ensembling, the plan
    flow scale, the re-plan interval) is what the policy runs with and what the protocol records.
    It used to reach the protocol only: a run "with ensembling" repeated the plain run episode for
    episode, while its results file said otherwise."""
    pytest.importorskip("metaworld")
    import json

    import yaml

    from sof_ros import eval as sof_eval

    seen = []

    def spy_rollout(arm, seed, max_steps, policy, instruction=None):
        seen.append(dict(ensemble=policy.ensemble, flow_scale=policy.solver.flow_scale, every=policy.replan_every))
        return False, 1, [0.0], [0.0]

    monkeypatch.setattr(sof_eval, "rollout", spy_rollout)
    ckpt = str(Path(__file__).resolve().parents[1] / "models" / "sof_metaworld_v2")
    base = ["--checkpoint", ckpt, "--rows", "sof_learning_free", "--tasks", "button-press-topdown",
            "--cameras", "corner", "--episodes", "1", "--max-steps", "2"]
    sof_eval.main(base + ["--work", str(tmp_path / "plain"), "--out", str(tmp_path / "plain.json")])
    own = seen.pop()
    assert own["ensemble"] == 0.0 and own["flow_scale"] == 1.0
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"eval": {"ensemble": 0.5, "plan_flow_scale": 2.0,
                                            "replan_every": own["every"] * 2}}))
    sof_eval.main(base + ["--config", str(cfg), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "a.json")])
    assert seen == [dict(ensemble=0.5, flow_scale=2.0, every=own["every"] * 2)]
    protocol = json.loads((tmp_path / "w" / "protocol.json").read_text())
    assert (protocol["ensemble"], protocol["plan_flow_scale"], protocol["replan_every"]) == (0.5, 2.0, own["every"] * 2)
    plain = json.loads((tmp_path / "plain" / "protocol.json").read_text())
    assert "ensemble" not in plain and "plan_flow_scale" not in plain and plain["replan_every"] == 0
    md = (tmp_path / "a.md").read_text()
    assert "temporal ensembling" in md and f"re-planning every {own['every'] * 2} control steps" in md and "at 2x their motion" in md
