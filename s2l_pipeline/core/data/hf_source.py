"""Records from a Hugging Face dataset: hub name, local dataset folder, or save_to_disk folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .readers import FileReadError


def iter_hf_records(name: str, config: str | None, split: str) -> Iterator[tuple[int, dict]]:
    """(row number, record) of one split; the hub path is the same call as a local folder."""
    import datasets

    display = hf_display(name, config, split)
    try:
        local = Path(name).expanduser()
        if (local / "state.json").exists() or (local / "dataset_dict.json").exists():
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many error types (hub, file, split errors)
        raise FileReadError(f"{display}: cannot load the dataset ({exc})") from exc
    yield from enumerate(ds, start=1)


def hf_display(name: str, config: str | None, split: str) -> str:
    return f"hf:{name}" + (f"/{config}" if config else "") + f"[{split}]"
