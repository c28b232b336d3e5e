"""Causal LMs: small GPT-NeoX (the Pythia architecture) built from a config, or any HF model.

Checkpoints are read and written as safetensors only; nothing here unpickles a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NeoXSize:
    """Shape of a from-scratch GPT-NeoX; tied embeddings keep tiny models tiny."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    max_positions: int = 256


# Measured on 2 CPU cores (docs/benchmarks.md): proxy ~50K tokens/s, target ~15K tokens/s.
SIZES: dict[str, NeoXSize] = {
    "proxy-micro": NeoXSize(hidden=16, layers=1, heads=2, ffn=64),
    "proxy-tiny": NeoXSize(hidden=32, layers=1, heads=2, ffn=128),
    "proxy": NeoXSize(hidden=64, layers=2, heads=4, ffn=256),
    "proxy-large": NeoXSize(hidden=96, layers=3, heads=4, ffn=384),
    "target": NeoXSize(hidden=128, layers=4, heads=4, ffn=512),
    "target-large": NeoXSize(hidden=256, layers=6, heads=8, ffn=1024),
}


def build_gpt_neox(size: NeoXSize, tokenizer, seed: int = 0):
    """A freshly initialized GPTNeoXForCausalLM sized by ``size`` for ``tokenizer``."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.ffn,
        max_position_embeddings=size.max_positions,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.25,
        },
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        use_cache=True,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


def load_causal_lm(name_or_path: str | Path, dtype=None):
    """(model, tokenizer) from a hub name, a local folder or a ``.gguf`` file (dequantized once
    into a cached folder); safetensors weights only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .gguf import local_model

    hf_logging.disable_progress_bar()  # step logs, not progress bars
    name_or_path = local_model(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        str(name_or_path), use_safetensors=True, dtype=dtype
    )
    return model, tokenizer


def save_model(model, tokenizer, out_dir: Path) -> Path:
    """Write safetensors weights, config and tokenizer into ``out_dir``."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def count_parameters(model) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
