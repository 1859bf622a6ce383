"""Learning-free Flow2Action: the geometry on a scene whose answer is known, and its fail-safe paths."""
import numpy as np
import pytest

from sof_ros.errors import SofError
from sof_ros.flow2action.geometric import GeometricFlow2Action

FX = 100.0
H = W = 64
FLOW_RES = 16  # working grid: one working px = 4 image px
DEPTH = 1.0


def looking_down():
    """Camera 1 m above the world origin looking straight down: image +u = world +x, +v = world -y."""
    K = np.array([[FX, 0, (W - 1) / 2], [0, FX, (H - 1) / 2], [0, 0, 1]])
    P = np.eye(4)
    P[:3, :3] = np.diag([1.0, -1.0, -1.0])
    P[:3, 3] = [0.0, 0.0, DEPTH]
    return K, P


def plan_moving_gripper(du_img: float, dv_img: float, steps: int = 4, radius_px: float = 10.0):
    """Flow plan in which only the pixels around the image centre (where the TCP projects) move."""
    flow = np.zeros((steps, FLOW_RES, FLOW_RES, 2), np.float32)
    s = W / FLOW_RES
    v, u = np.mgrid[0:FLOW_RES, 0:FLOW_RES]
    centre = ((u + 0.5) * s - 0.5 - (W - 1) / 2) ** 2 + ((v + 0.5) * s - 0.5 - (H - 1) / 2) ** 2 < radius_px ** 2
    flow[:, centre, 0] = du_img / s
    flow[:, centre, 1] = dv_img / s
    return flow


@pytest.mark.parametrize("du,dv,expect", [(0.5, 0.0, (0.5, 0.0)), (0.0, 0.5, (0.0, -0.5)), (-0.3, 0.3, (-0.3, -0.3))])
def test_gripper_motion_in_image_becomes_the_matching_world_action(du, dv, expect):
    """0.5 px per step at 1 m depth and f = 100 px is 5 mm per step, i.e. action 0.5 (1 cm per unit)."""
    K, P = looking_down()
    depth = np.full((H, W), DEPTH, np.float32)
    solver = GeometricFlow2Action(use_pnp=False, min_motion_px=0.5)
    a = solver.act(plan_moving_gripper(du, dv), depth, K, P, ee_pos=np.zeros(3), step_in_plan=0)
    assert a.shape == (4,) and np.all(np.isfinite(a)) and np.all(np.abs(a) <= 1)
    np.testing.assert_allclose(a[:2], expect, atol=0.12, err_msg=solver.last_reason)
    assert abs(a[2]) < 0.12, solver.last_reason


def test_static_plan_gives_no_motion():
    K, P = looking_down()
    solver = GeometricFlow2Action(use_pnp=False)
    a = solver.act(np.zeros((4, FLOW_RES, FLOW_RES, 2), np.float32), np.full((H, W), DEPTH, np.float32), K, P,
                   np.zeros(3))
    np.testing.assert_allclose(a[:3], 0.0, atol=0.05)


def test_non_finite_plan_or_depth_stops_instead_of_moving():
    K, P = looking_down()
    plan = plan_moving_gripper(0.5, 0.0)
    bad_plan = plan.copy()
    bad_plan[:] = np.nan
    solver = GeometricFlow2Action(use_pnp=False)
    a = solver.act(bad_plan, np.full((H, W), DEPTH, np.float32), K, P, np.zeros(3))
    assert np.all(a[:3] == 0.0), solver.last_reason
    no_depth = np.full((H, W), np.nan, np.float32)
    a = GeometricFlow2Action(use_pnp=False).act(plan, no_depth, K, P, np.zeros(3))
    assert np.all(a[:3] == 0.0)


def test_tcp_out_of_view_stops():
    K, P = looking_down()
    solver = GeometricFlow2Action(use_pnp=False)
    a = solver.act(plan_moving_gripper(0.5, 0.0), np.full((H, W), DEPTH, np.float32), K, P,
                   ee_pos=np.array([5.0, 0.0, 0.0]))
    assert np.all(a[:3] == 0.0), solver.last_reason


def test_malformed_inputs_are_clear_errors():
    K, P = looking_down()
    depth = np.full((H, W), DEPTH, np.float32)
    plan = plan_moving_gripper(0.5, 0.0)
    solver = GeometricFlow2Action()
    with pytest.raises(SofError, match="flow_plan must be"):
        solver.act(plan[..., 0], depth, K, P, np.zeros(3))
    with pytest.raises(SofError, match="depth is missing"):
        solver.act(plan, None, K, P, np.zeros(3))
    with pytest.raises(SofError, match="intrinsics"):
        solver.act(plan, depth, np.eye(2), P, np.zeros(3))
    with pytest.raises(SofError, match="rotation"):
        bad = P.copy()
        bad[:3, :3] *= 2
        solver.act(plan, depth, K, bad, np.zeros(3))
    with pytest.raises(SofError, match="ee_pos"):
        solver.act(plan, depth, K, P, np.array([np.nan, 0, 0]))
