"""Storage when things go wrong: an S3 server that goes away for a while, a full disk."""

import contextlib
import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from s2l_pipeline.core.support.storage import (
    DEFAULT_RETRY_S,
    ArtifactStore,
    StorageError,
    backoff_delays,
)
from s2l_pipeline.core.support.tables import read_table, write_table


class FlakyProxy:
    """A TCP forwarder to the moto server that can refuse connections for a while: from the
    client's side, the S3 endpoint is down exactly as a stopped server is."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.up = threading.Event()
        self.stop = threading.Event()

    def start(self) -> "FlakyProxy":
        self.sock.listen(64)
        self.up.set()
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                continue
            if not self.up.is_set():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                client.close()  # a reset: the server is not there
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_backoff_outlasts_a_one_minute_outage() -> None:
    delays = backoff_delays(DEFAULT_RETRY_S)
    assert sum(delays) >= 60 and max(delays) <= 30
    assert delays[:4] == [1, 2, 4, 8]


@pytest.mark.slow
def test_writes_and_reads_wait_out_an_outage(
    s3_endpoint: str, s3_bucket: str, monkeypatch, caplog
) -> None:
    proxy = FlakyProxy(int(s3_endpoint.rsplit(":", 1)[1])).start()
    try:
        store = ArtifactStore(
            f"s3://{s3_bucket}/art", endpoint_url=f"http://127.0.0.1:{proxy.port}"
        )
        import polars as pl

        df = pl.DataFrame({"x": list(range(100))})
        write_table(df, store, "before.parquet")
        proxy.up.clear()  # the server goes away ...
        threading.Timer(12, proxy.up.set).start()  # ... and comes back after 12 s
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="s2l_pipeline.core.support.storage"):
            ref = write_table(df, store, "during.parquet")
        assert time.monotonic() - t0 >= 10
        assert any("retry" in r.message and "during.parquet" in r.message for r in caplog.records)
        assert read_table(ref, store).equals(df)
    finally:
        proxy.stop.set()


@pytest.mark.slow
def test_a_lasting_outage_fails_naming_the_object(s3_endpoint, s3_bucket, monkeypatch) -> None:
    monkeypatch.setenv("S2L_STORAGE_RETRY_S", "3")
    proxy = FlakyProxy(int(s3_endpoint.rsplit(":", 1)[1])).start()
    proxy.up.clear()
    try:
        store = ArtifactStore(
            f"s3://{s3_bucket}/art", endpoint_url=f"http://127.0.0.1:{proxy.port}"
        )
        with pytest.raises(StorageError, match=rf"s3://{s3_bucket}/art/x.json: upload failed"):
            store.write_text("x.json", "{}")
    finally:
        proxy.stop.set()


def test_a_full_disk_names_the_path(tmp_path: Path) -> None:
    """/dev/full answers every write with ENOSPC: the error says which artifact it was."""
    store = ArtifactStore(str(tmp_path / "art"))
    target = tmp_path / "art" / "t" / "table.json"
    target.parent.mkdir(parents=True)
    target.with_name("table.json.part").symlink_to("/dev/full")
    with pytest.raises(StorageError, match=r"cannot write .*t/table.json: No space left"):
        store.write_text("t/table.json", "x" * 100_000)
