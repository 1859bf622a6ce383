"""The headless MuJoCo camera the simulated arms (MetaWorldArm, LiberoArm, RobosuiteArm) render
through: one place that finds the scene's camera, sizes the offscreen buffer, opens and closes the
`mujoco.Renderer` and states the camera model (intrinsics, pose in OpenCV axes), so the three arms
check cameras and image sizes alike, free GL alike and report the same camera conventions."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402

from sof_ros.errors import SofError  # noqa: E402

# MuJoCo camera axes are x right, y up, z backward; OpenCV's are x right, y down, z forward.
_MJ_TO_CV = np.diag([1.0, -1.0, -1.0])
_ROT180 = np.diag([-1.0, -1.0, 1.0])


def open_camera(model, camera: str, scene: str, height: int, width: int, multisample: bool = False):
    """(camera id, mujoco.Renderer of height x width) for `camera` of `model`; one setup shared by
    the three simulated arms, with one set of errors for unknown cameras and image sizes."""
    import mujoco

    cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cam_id < 0:
        names = [model.camera(i).name for i in range(model.ncam)]
        raise SofError(f"camera '{camera}' not in the {scene} scene; choose one of {names}")
    h, w = height, width
    if not (16 <= h <= 1080 and 16 <= w <= 1920):
        raise SofError(f"image size {w}x{h} out of range; use 16..1920 x 16..1080")
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, w)
    model.vis.global_.offheight = max(model.vis.global_.offheight, h)
    if not multisample:
        model.vis.quality.offsamples = 0  # no multisampling: several times faster frames in software GL
    return cam_id, mujoco.Renderer(model, h, w)


def visual_geoms_option():
    """A scene option showing robosuite's visual meshes (geom group 1) only, not its collision
    geoms (group 0) nor sites: what LiberoArm and RobosuiteArm render."""
    import mujoco

    opt = mujoco.MjvOption()
    opt.geomgroup[:] = 0
    opt.geomgroup[1] = 1
    opt.sitegroup[:] = 0
    return opt


def pinhole_intrinsics(model, cam_id: int, height: int, width: int) -> np.ndarray:
    """3x3 K in pixels of MuJoCo camera `cam_id` rendered at height x width (square pixels, centred
    principal point): the one camera model of every simulated arm."""
    fovy = np.deg2rad(model.cam_fovy[cam_id])
    f = 0.5 * height / np.tan(0.5 * fovy)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)


def camera_upside_down(data, cam_id: int) -> bool:
    """Whether the camera is mounted upside down (camera up vs world z; MetaWorld's `corner`): the
    arms then rotate its images 180 degrees, and its pose with them, so images are upright."""
    return float(data.cam_xmat[cam_id].reshape(3, 3)[2, 1]) < 0


def camera_pose_world(data, cam_id: int) -> np.ndarray:
    """(4, 4) camera-to-world pose in OpenCV axes of the upright image: the one pose convention of
    every simulated arm (LiberoArm re-expresses it in the robot base frame)."""
    rot = data.cam_xmat[cam_id].reshape(3, 3) @ _MJ_TO_CV
    if camera_upside_down(data, cam_id):
        rot = rot @ _ROT180
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = data.cam_xpos[cam_id]
    return pose


def close_renderer(renderer) -> None:
    """Free a renderer's GL resources with *its* context current: MuJoCo's own close frees whatever
    context is current, which silently corrupts another live arm's renderer."""
    ctx = getattr(renderer, "_gl_context", None)
    if ctx is not None:
        ctx.make_current()
    renderer.close()
