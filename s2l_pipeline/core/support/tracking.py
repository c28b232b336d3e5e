"""Experiment tracking through ``MlflowClient``: one explicit run per call, never global state.

The fluent ``mlflow.start_run`` API keeps an active run per process, which merges runs when
several assets materialize in one process; the client API names its run every time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .storage import default_cache_dir


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server did not answer."""


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when a tracking server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise TrackingUnavailable(f"MLflow server {uri} answered {resp.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({exc}); start it, fix "
            "MLFLOW_TRACKING_URI, or set the mlflow resource's on_unreachable to 'local'"
        ) from exc


def local_artifact_location(tracking_uri: str) -> str | None:
    """file:// folder beside a sqlite:/// store's database; None for servers (they decide)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    folder = Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
    return folder.resolve().as_uri()


def ensure_sqlite_store(tracking_uri: str) -> None:
    """Create a local SQLite store's database all at once: MLflow builds its tables in a file
    next to it, which is then linked into place only if none is there yet. A process killed
    while MLflow migrates (seconds, on the first run) leaves a stray temp file, never a
    half-built database that fails every later run ('table ... already exists')."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri.removeprefix("sqlite:///"))
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    _write_empty_store(tmp, local_artifact_location(tracking_uri))
    try:
        os.link(tmp, path)  # atomic, and refuses to replace a store another process made
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


# A new store's bytes: MLflow's migrations take about 1.2 s a store, so they run once per
# machine and MLflow version; the result is kept in the cache folder and in this process.
_EMPTY_STORE: dict[str, bytes] = {}  # MLflow version -> an empty store's bytes
_TEMPLATE_ROOT = "file:///s2l-empty-store"  # its default experiment's folder, moved per store


def _write_empty_store(file: Path, artifact_root: str | None) -> None:
    """An empty, migrated store at ``file``: a copy of the template, with the default
    experiment's folder moved to ``artifact_root`` (the one row that depends on where the
    store lives)."""
    import sqlite3

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if artifact_root is None:  # MLflow's own default folder: built as MLflow builds it
        SqlAlchemyStore(f"sqlite:///{file}", None).engine.dispose()
        return
    file.write_bytes(empty_store_bytes())
    with sqlite3.connect(file) as db:
        [(location,)] = db.execute(
            "select artifact_location from experiments where experiment_id = 0"
        ).fetchall()
        db.execute(
            "update experiments set artifact_location = ? where experiment_id = 0",
            (artifact_root + location.removeprefix(_TEMPLATE_ROOT),),
        )
    db.close()


def store_template(cache_dir: Path) -> Path:
    """Where ``cache_dir`` keeps the empty store of the installed MLflow version."""
    import mlflow

    return cache_dir / "mlflow" / f"empty-store-{mlflow.__version__}.db"


def empty_store_bytes() -> bytes:
    """The template store of this MLflow version: from this process, else the cache folder,
    else built by MLflow and kept there (written whole, then renamed into place)."""
    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    version = mlflow.__version__
    if version in _EMPTY_STORE:
        return _EMPTY_STORE[version]
    kept = store_template(default_cache_dir())
    data = kept.read_bytes() if kept.exists() else b""
    if not data.startswith(b"SQLite format 3\0"):  # absent, or not a database: build it
        kept.parent.mkdir(parents=True, exist_ok=True)
        tmp = kept.with_name(f".{kept.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        SqlAlchemyStore(f"sqlite:///{tmp}", _TEMPLATE_ROOT).engine.dispose()
        data = tmp.read_bytes()
        os.replace(tmp, kept)
    _EMPTY_STORE[version] = data
    return data


def local_tracking_uri(data_dir: str | Path) -> str:
    path = Path(data_dir).expanduser().resolve() / "mlflow" / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


@dataclass
class Tracker:
    """A live MLflow run: log params, metrics and artifacts to it by id."""

    client: Any
    run_id: str
    experiment_id: str
    tracking_uri: str
    _metrics: list = field(default_factory=list)

    @property
    def url(self) -> str | None:
        """A browser link when the store is a server; None for a local file/sqlite store."""
        if self.tracking_uri.startswith(("http://", "https://")):
            base = self.tracking_uri.rstrip("/")
            return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _short(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_dict(self, obj: Any, name: str) -> None:
        self.client.log_text(self.run_id, json.dumps(obj, indent=2, default=str), name)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, _short(v))


def _short(value: Any, limit: int = 6000) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:limit]


@contextmanager
def mlflow_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Tracker]:
    """Open a run, yield it, and close it FINISHED or FAILED whatever happens inside.

    With a local SQLite store, artifacts go in an ``artifacts`` folder beside the database
    (MLflow's own default is ./mlruns under whatever the current directory happens to be).
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    from mlflow.tracking import MlflowClient

    ensure_sqlite_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(
            experiment, artifact_location=local_artifact_location(tracking_uri)
        )
    )
    run = client.create_run(exp_id, run_name=run_name, tags=dict(tags or {}))
    tracker = Tracker(client, run.info.run_id, exp_id, tracking_uri)
    try:
        yield tracker
    except BaseException as exc:  # an interrupt (cancel, Ctrl-C) is a kill, not a failure
        status = "FAILED" if isinstance(exc, Exception) else "KILLED"
        client.set_terminated(run.info.run_id, status=status)
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")


def end_orphaned_runs(tracking_uri: str, experiment: str, tag: str, value: str) -> list[str]:
    """Mark KILLED the RUNNING runs tagged ``tag=value`` whose process died without closing
    them (SIGKILL, OOM); returns their ids."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{tag}` = '{value}' and attributes.status = 'RUNNING'",
    )
    for run in runs:
        client.set_terminated(run.info.run_id, status="KILLED")
    return [r.info.run_id for r in runs]


def find_run(tracking_uri: str, experiment: str, tag: str, value: str) -> str | None:
    """The oldest run tagged ``tag=value`` (a study's parent run), or None."""
    from mlflow.tracking import MlflowClient

    ensure_sqlite_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{tag}` = '{value}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None
