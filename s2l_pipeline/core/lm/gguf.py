"""A model given as one ``.gguf`` file (llama.cpp's format, as small instruct models ship).

Transformers reads GGUF by dequantizing it on every load (about 20 s for a 135M model) and
marks the result quantized, so ``save_pretrained`` refuses it. It is dequantized once into a
plain safetensors folder (weights copied into a model built from its config), cached by the
file's SHA-256 with a record of its source, and every later load reads that folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ..support.hashing import file_hash
from ..support.storage import default_cache_dir

log = logging.getLogger(__name__)

SOURCE = "gguf_source.json"  # in the folder: which file it was made from


def is_gguf(name_or_path: str | Path) -> bool:
    return str(name_or_path).lower().endswith(".gguf")


def gguf_folder(path: str | Path, cache_root: Path | None = None) -> Path:
    """The safetensors folder of the GGUF file at ``path``, made on first use."""
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such .gguf file")
    digest = file_hash(src)
    out = (cache_root or default_cache_dir()) / "gguf" / digest[:16]
    if (out / SOURCE).exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    log.info("dequantizing %s into %s (once; cached by its SHA-256)", src, out)
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # kept, it would mark the folder quantized too
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    record = {"gguf": str(src.resolve()), "sha256": digest, "architecture": type(plain).__name__}
    (tmp / SOURCE).write_text(json.dumps(record, indent=1))
    shutil.rmtree(out, ignore_errors=True)  # a half-written folder from a killed run
    tmp.rename(out)
    return out


def local_model(name_or_path: str | Path) -> str:
    """A hub name or folder as it is; a ``.gguf`` file as its safetensors folder."""
    return str(gguf_folder(name_or_path)) if is_gguf(name_or_path) else str(name_or_path)
