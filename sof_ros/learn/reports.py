"""PNG reports a person reads faster than numbers: flow reconstructions, token usage, timelines, curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402



def loss_curves(histories: dict[str, list[dict]], path: Path) -> None:
    names = [n for n, h in histories.items() if h]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        hist = histories[name]
        steps = [r["step"] for r in hist]
        for key in hist[0]:
            if key not in ("step", "wall_s"):  # wall_s is a clock, not a loss
                ax.plot(steps, [r[key] for r in hist], label=key)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _real_vs_decoded(frames: np.ndarray, real: np.ndarray, decoded: np.ndarray, path: Path, title: str,
                     render, step_title) -> None:
    """Per sample: the current frame, then 3 steps of the real segment (row 1) and of the decoded one
    (row 2); `render` turns one step into an image, `step_title(t)` labels its column."""
    n, h = real.shape[:2]
    steps = sorted({0, h // 2, h - 1})
    fig, axes = plt.subplots(2 * n, 1 + len(steps), figsize=(1.6 * (1 + len(steps)), 1.6 * 2 * n), squeeze=False)
    for i in range(n):
        for row, (seq, label) in enumerate(((real[i], "real"), (decoded[i], "decoded"))):
            ax = axes[2 * i + row]
            ax[0].imshow(frames[i])
            ax[0].set_ylabel(label, fontsize=7)
            for j, t in enumerate(steps):
                ax[1 + j].imshow(render(seq[t]))
                if i == 0 and row == 0:
                    ax[1 + j].set_title(step_title(t), fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def flow_reconstructions(frames: np.ndarray, real: np.ndarray, decoded: np.ndarray, path: Path,
                         title: str = "input flow (top) vs decoded from tokens (bottom)") -> None:
    """frames (N, S, S, 3); real/decoded (N, H, r, r, 2) flow, colour-coded on one scale."""
    from sof_ros.flow.viz import flow_to_color

    vmax = max(float(np.abs(real).max()), 1e-3)
    _real_vs_decoded(frames, real, decoded, path, title, lambda f: flow_to_color(f, max_magnitude=vmax),
                     lambda t: f"step {t}")


def frame_predictions(frames: np.ndarray, real: np.ndarray, decoded: np.ndarray, path: Path, title: str) -> None:
    """Pixel-space skills: frames (N, S, S, 3); real/decoded (N, H, r, r, 3) uint8 future frames."""
    _real_vs_decoded(frames, real, decoded, path, title, lambda f: f, lambda t: f"t+{t + 1}")


def token_usage(ids: np.ndarray, codebook_size: int, path: Path) -> None:
    counts = np.bincount(ids.reshape(-1), minlength=codebook_size)
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.bar(np.arange(codebook_size), counts, width=1.0)
    ax.set_xlabel("skill token id")
    ax.set_ylabel("count")
    ax.set_title(f"token usage: {int((counts > 0).sum())}/{codebook_size} codes used")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def token_timelines(timelines: list[tuple[str, np.ndarray]], codebook_size: int, path: Path) -> None:
    """One row per held-out episode: the first token of the segment starting at each step."""
    if not timelines:
        return
    length = max(len(t) for _, t in timelines)
    grid = np.full((len(timelines), length), np.nan)
    for i, (_, ids) in enumerate(timelines):
        grid[i, : len(ids)] = ids
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(timelines) + 1))
    ax.imshow(grid, aspect="auto", cmap="tab20", interpolation="nearest", vmin=0, vmax=codebook_size)
    ax.set_yticks(range(len(timelines)))
    ax.set_yticklabels([name for name, _ in timelines], fontsize=7)
    ax.set_xlabel("time step (segment start)")
    ax.set_title("skill-token timelines of held-out episodes (colour = first token id)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def success_bars(rows: dict[str, dict], path: Path, title: str) -> None:
    """rows: {row: {"per_task": {task: rate}, "average": rate[, "ci95", "per_task_ci95"]}} -> grouped
    bars, with 95% intervals as error bars when given."""
    names = list(rows)
    tasks = list(next(iter(rows.values()))["per_task"]) + ["average"]
    x = np.arange(len(tasks))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(8, len(tasks) * 0.9), 3.5))
    for i, name in enumerate(names):
        r = rows[name]
        vals = [r["per_task"].get(t, np.nan) for t in tasks[:-1]] + [r["average"]]
        bar = ax.bar(x + i * width, vals, width, label=name)
        if "ci95" in r:  # 95% intervals as error bars, where the results carry them
            cis = [r.get("per_task_ci95", {}).get(t, (np.nan, np.nan)) for t in tasks[:-1]] + [r["ci95"]]
            lo = [max(0.0, v - c[0]) for v, c in zip(vals, cis)]
            hi = [max(0.0, c[1] - v) for v, c in zip(vals, cis)]
            ax.errorbar(x + i * width, vals, yerr=[lo, hi], fmt="none", ecolor="black", elinewidth=0.6, capsize=1.5,
                        color=bar.patches[0].get_facecolor())
    ax.set_xticks(x + width * (len(names) - 1) / 2)
    ax.set_xticklabels(tasks, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=len(names))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
