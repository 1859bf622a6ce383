"""oneDNN AVX2 heap corruption (issue 7): the root cause, kept reproducible on any x86 machine.

oneDNN 3.12 (torch 2.13's CPU build) picks `brgconv_strided:avx2` for the backward-data pass of a
1x1 stride-2 convolution on CPUs without AVX-512; with a channels-last input of fewer than 8
channels it writes past the gradient buffer (`free(): invalid next size`, SIGABRT / SIGSEGV).
Our ResBlock skip is such a convolution, and `image_to_tensor` used to hand the image encoders a
permuted (channels-last) view. The crash showed up first under DDP on an AVX2-only EPYC.

`ONEDNN_MAX_CPU_ISA=AVX2` makes oneDNN pick the AVX2 kernels on any AVX2-or-newer CPU, so the
tests below exercise that path here too.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from sof_ros.config import load_config
from sof_ros.nn import image_to_tensor

AVX2_ENV = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}


def _inputs(name: str, cfg, b: int = 4):
    s, r, t = cfg.skill.image_res, cfg.skill.flow_res, cfg.skill.segment
    img = torch.randint(0, 255, (b, s, s, 3), dtype=torch.uint8)
    prop = torch.randn(b, 4)
    n = cfg.skill.tokens_per_segment
    return {
        "skill": lambda m: m(torch.randn(b, t, r, r, 2), img)[0],
        "pixel_skill": lambda m: m(torch.randn(b, t, r, r, 3), img)[0],
        "policy": lambda m: m(img, torch.randn(b, cfg.policy.text_dim), torch.randint(0, m.codebook_size, (b, n)),
                              prop if m.use_proprio else None),
        "pixel_policy": lambda m: m(img, torch.randn(b, cfg.policy.text_dim),
                                    torch.randint(0, m.codebook_size, (b, n)), prop if m.use_proprio else None),
        "f2a": lambda m: m(torch.randn(b, t, r, r, 2), img, prop),
        "f2a_plan_only": lambda m: m(torch.randn(b, t, r, r, 2), img, prop),
        "pixel2action": lambda m: m(torch.randn(b, t, r, r, 3), img, prop),
        "skill2action": lambda m: m(torch.randint(0, 100, (b, n)), img, prop),
        "bc": lambda m: m(torch.randn(b, cfg.policy.text_dim), img, prop),
    }[name]


@pytest.mark.parametrize("config", ["config/tiny.yaml", "config/metaworld.yaml"])
def test_every_convolution_sees_nchw_contiguous_input(config):
    """The invariant that keeps the models off oneDNN's channels-last kernels."""
    from sof_ros.train import build_models

    cfg = load_config(config)
    torch.manual_seed(0)
    bad = []
    for name, model in build_models(cfg).items():
        def check(mod, args, name=name):
            x = args[0]
            if not x.is_contiguous():
                bad.append(f"{name}: {type(mod).__name__} input {tuple(x.shape)} strides {x.stride()}")
        hooks = [m.register_forward_pre_hook(check) for m in model.modules() if isinstance(m, nn.Conv2d)]
        _inputs(name, cfg)(model).float().pow(2).mean().backward()
        for h in hooks:
            h.remove()
    assert not bad, "channels-last / strided conv inputs:\n" + "\n".join(bad[:10])


def test_image_to_tensor_is_nchw_contiguous():
    x = image_to_tensor(torch.zeros(2, 16, 16, 3, dtype=torch.uint8))
    assert x.shape == (2, 3, 16, 16) and x.is_contiguous()


_TRAIN_EVERY_MODEL = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, "test")
    from test_onednn_layout import _inputs
    from sof_ros.config import load_config
    from sof_ros.train import build_models
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for config in ("config/tiny.yaml", "config/metaworld.yaml"):
        cfg = load_config(config)
        for name, model in build_models(cfg).items():
            opt = torch.optim.AdamW(model.parameters(), 1e-3)
            for _ in range(3):
                opt.zero_grad()
                _inputs(name, cfg, b=16)(model).float().pow(2).mean().backward()
                opt.step()
    print("trained every model")
""")


def test_every_model_trains_on_the_avx2_kernels():
    """Forward + backward of every network under oneDNN's AVX2 kernels, in a child process (a heap
    corruption would kill the test runner otherwise). Crashed on main at 0f0b5fb."""
    proc = subprocess.run([sys.executable, "-c", _TRAIN_EVERY_MODEL], env=AVX2_ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "trained every model" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
