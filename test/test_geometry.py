"""sof_ros.geometry: pinhole projection and back-projection round trips with a MetaWorld-like camera
(128x128, 45 degree vertical field of view, principal point at the pixel-index centre, a corner
camera looking down at the table), camera/world transforms and flow resizing."""
import numpy as np
import pytest

from sof_ros.errors import SofError
from sof_ros.geometry import (backproject, camera_to_world, depth_to_world, pixel_grid, project, resize_flow,
                              scale_intrinsics, world_to_camera, world_to_pixel)

W = H = 128


def metaworld_like_camera(fovy_deg: float = 45.0):
    """K as MetaWorldArm.intrinsics builds it, and a camera-to-world pose (OpenCV axes) at a corner
    of the table looking at a point on it."""
    f = 0.5 * H / np.tan(0.5 * np.deg2rad(fovy_deg))
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
    eye, target = np.array([1.3, -0.2, 1.1]), np.array([0.0, 0.6, 0.05])
    z = (target - eye) / np.linalg.norm(target - eye)  # optical axis
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)  # image right
    y = np.cross(z, x)  # image down
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], axis=1)
    pose[:3, 3] = eye
    return K, pose, target


def test_back_project_then_project_returns_the_pixels():
    K, pose, target = metaworld_like_camera()
    rng = np.random.default_rng(0)
    uv = rng.uniform(-0.5, W - 0.5, (500, 2))
    z = rng.uniform(0.3, 3.0, 500)
    world = camera_to_world(pose, backproject(K, uv, z))
    uv_back, z_back = world_to_pixel(K, pose, world)
    np.testing.assert_allclose(uv_back, uv, atol=1e-9)
    np.testing.assert_allclose(z_back, z, atol=1e-12)
    np.testing.assert_allclose(world_to_camera(pose, world), backproject(K, uv, z), atol=1e-12)
    # the point the camera looks at is on the optical axis: it lands on the principal point
    centre, depth = world_to_pixel(K, pose, target[None])
    np.testing.assert_allclose(centre[0], [(W - 1) / 2, (H - 1) / 2], atol=1e-9)
    assert depth[0] == pytest.approx(np.linalg.norm(target - pose[:3, 3]))
    # OpenCV axes: a point 5 cm along the camera's x axis from the target lands right of centre, same row
    right, _ = world_to_pixel(K, pose, (target + 0.05 * pose[:3, 0])[None])
    assert right[0, 0] > centre[0, 0] + 3 and right[0, 1] == pytest.approx(centre[0, 1])


def test_depth_image_lifts_every_pixel_centre():
    K, pose, _ = metaworld_like_camera()
    depth = np.random.default_rng(1).uniform(0.5, 2.0, (H, W))
    pts = depth_to_world(K, pose, depth)
    assert pts.shape == (H, W, 3)
    uv, z = world_to_pixel(K, pose, pts)
    np.testing.assert_allclose(uv, pixel_grid(H, W), atol=1e-9)
    np.testing.assert_allclose(z, depth, atol=1e-12)
    assert pixel_grid(2, 3)[1, 2].tolist() == [2.0, 1.0]  # (u, v) = (column, row)


def test_skewed_intrinsics_round_trip_and_points_at_depth_zero():
    K = np.array([[120.0, 3.0, 60.0], [0, 110.0, 50.0], [0, 0, 1]])
    uv = np.array([[0.0, 0.0], [10.5, 99.0], [127.0, 3.0]])
    np.testing.assert_allclose(project(K, backproject(K, uv, np.array([0.5, 1.0, 2.0]))), uv, atol=1e-9)
    assert not np.isfinite(project(K, np.array([[0.1, 0.2, 0.0]]))).all()  # z = 0: inf, no exception


def test_resize_flow_rescales_vectors_to_the_new_grid():
    flow = np.zeros((2, 96, 128, 2), np.float16)  # (T, H, W, 2), dataset flows are float16
    flow[..., 0], flow[..., 1] = 2.0, -3.0
    small = resize_flow(flow, 32)
    assert small.shape == (2, 32, 32, 2) and small.dtype == np.float32
    np.testing.assert_allclose(small[..., 0], 2.0 * 32 / 128)
    np.testing.assert_allclose(small[..., 1], -3.0 * 32 / 96)
    wide = resize_flow(flow[0], (24, 40))  # (h, w)
    assert wide.shape == (24, 40, 2)
    np.testing.assert_allclose(wide[..., 0], 2.0 * 40 / 128, rtol=1e-6)
    # area interpolation averages: a field moving only in the left half halves at a 2-wide grid
    half = np.zeros((4, 4, 2), np.float32)
    half[:, :2, 0] = 4.0
    np.testing.assert_allclose(resize_flow(half, (1, 1))[0, 0], [4.0 * 0.5 * 0.25, 0.0])
    big = resize_flow(half, (8, 8), interpolation="nearest")
    np.testing.assert_allclose(big[:, :4, 0], 8.0)
    with pytest.raises(SofError, match="interpolation"):
        resize_flow(half, 8, interpolation="cubic")
    with pytest.raises(SofError, match=r"\(\.\.\., H, W, 2\)"):
        resize_flow(np.zeros((4, 4)), 2)


def test_scaled_intrinsics_project_to_the_same_place_in_the_resized_image():
    """A 640x480 camera resized to 128x128 (the working resolution): a point projects to the pixel of
    the small image that covers the same part of the scene (pixel-centre convention)."""
    K = np.array([[615.0, 0, 321.2], [0, 614.0, 238.7], [0, 0, 1]])
    K2 = scale_intrinsics(K, (640, 480), (128, 128))
    X = np.array([[0.1, -0.05, 0.7], [-0.2, 0.1, 1.3]])
    uv, uv2 = project(K, X), project(K2, X)
    np.testing.assert_allclose((uv2 + 0.5) * [640 / 128, 480 / 128] - 0.5, uv, atol=1e-9)
    np.testing.assert_allclose(scale_intrinsics(K, (128, 128), (128, 128)), K)
    MW = metaworld_like_camera()[0]  # principal point at the centre stays at the centre
    np.testing.assert_allclose(scale_intrinsics(MW, (128, 128), (32, 32))[:2, 2], [15.5, 15.5])
    with pytest.raises(SofError, match="positive"):
        scale_intrinsics(K, (0, 480), (128, 128))
