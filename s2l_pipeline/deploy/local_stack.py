"""A production-shaped deployment on one machine, every service on loopback.

PostgreSQL (Dagster's instance storage and MLflow's backend store), a moto S3 server (the
artifact store, the shard prefix, MLflow's artifacts and Dagster's compute logs), an MLflow
server, a Ray head (the executor), ``dagster-daemon`` and ``dagster-webserver``. ``up`` starts
them and writes ``env.sh`` (what a shell needs to use the stack) and ``stack.json`` (ports,
process groups); ``down`` stops what ``stack.json`` names. Run through ``infra/stack``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .ui_links import lineage_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_YAML = PROJECT_ROOT / "infra" / "dagster.production.yaml"
BUCKET = "s2l"
STATE = "stack.json"
PG_USER = "s2l"
RUNNING: dict[int, subprocess.Popen] = {}  # the processes this `up` started, by pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Poll ``check`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            if value := check():
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def bin_of(name: str) -> str:
    """A console script of this environment (the venv's ``mlflow``, ``ray``, ``dagster-*``)."""
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pip install -e '.[deploy]'")
    return str(path)


# ---------------------------------------------------------------------------- PostgreSQL


def pg_bindir() -> Path:
    """Debian's PostgreSQL binaries (``apt-get install postgresql``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found and not shutil.which("initdb"):
        raise FileNotFoundError("PostgreSQL is not installed: apt-get install -y postgresql")
    return Path(found[-1]).parent if found else Path(shutil.which("initdb")).parent


def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its commands as Debian's postgres user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def pg_data_dir(root: Path) -> Path:
    """Under ``root`` normally; as root, in a folder the postgres user can reach."""
    if os.geteuid() != 0:
        return root / "postgres"
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"s2l-stack-pg-{digest}"
    path.mkdir(mode=0o700, exist_ok=True)
    shutil.chown(path, "postgres", "postgres")
    return path


def start_postgres(root: Path, port: int, password: str) -> dict:
    bindir, data = pg_bindir(), pg_data_dir(root)
    if not (data / "PG_VERSION").exists():
        pwfile = data.parent / f"{data.name}.pw"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run(
            [*_as_postgres(), str(bindir / "initdb"), "-D", str(data), "-U", PG_USER,
             "--auth-host=scram-sha-256", "--auth-local=peer", f"--pwfile={pwfile}"],
            check=True, capture_output=True,
        )  # fmt: skip
        pwfile.unlink()
    log = data / "server.log"
    subprocess.run(
        [*_as_postgres(), str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
         "-o", f"-h 127.0.0.1 -p {port} -k {data}", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    env = {**os.environ, "PGPASSWORD": password}
    for db in ("dagster", "mlflow"):
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, db],
            env=env,
            capture_output=True,
        )  # fmt: skip  (exists already after a restart: fine)
    return {"kind": "postgres", "data": str(data), "port": port}


def stop_postgres(service: dict) -> None:
    subprocess.run(
        [*_as_postgres(), str(pg_bindir() / "pg_ctl"), "-D", service["data"], "-m", "fast", "stop"],
        capture_output=True,
    )


# ---------------------------------------------------------------------------- processes


def spawn(name: str, cmd: list[str], root: Path, env: dict[str, str]) -> dict:
    """Start ``cmd`` in its own process group (``down`` ends the whole group), log to a file."""
    log = (root / "logs" / f"{name}.log").open("w")
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    RUNNING[proc.pid] = proc
    return {"kind": "process", "name": name, "pgid": proc.pid, "log": log.name}


def alive(service: dict) -> bool:
    """The group's leader still runs (when this process started it) and the group exists."""
    proc = RUNNING.get(service["pgid"])
    if proc is not None and proc.poll() is not None:
        return False
    try:
        os.killpg(service["pgid"], 0)
        return True
    except ProcessLookupError:
        return False


# `ray start --block` does not exit on SIGTERM: its children stop, it sleeps on until SIGKILL.
# Waiting the other services' 30 s for it made every `down` (and the Ray tests) 30 s longer.
RAY_GRACE_S = 5.0


def stop_group(service: dict, timeout: float | None = None) -> None:
    """SIGTERM the service's process group, SIGKILL whatever is left after ``timeout``."""
    if timeout is None:
        timeout = RAY_GRACE_S if service.get("name") == "ray" else 30.0
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service["pgid"], signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        wait_for(f"{service['name']} to stop", lambda: not alive(service), timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service["pgid"], signal.SIGKILL)


def check_alive(service: dict) -> None:
    """Fail with the log's tail when a service died while we wait for it (None otherwise)."""
    if not alive(service):
        tail = Path(service["log"]).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{service['name']} exited:\n{tail}")


# ---------------------------------------------------------------------------- configuration


def instance_yaml(root: Path, gpus: int) -> dict:
    """The production instance YAML, plus what a one-machine stack sets: the PostgreSQL port,
    compute logs in the S3 server, and one ``gpu`` pool slot per GPU."""
    config = yaml.safe_load(PRODUCTION_YAML.read_text())
    config["storage"]["postgres"]["postgres_db"]["port"] = {"env": "DAGSTER_PG_PORT"}
    config["concurrency"]["pools"]["default_limit"] = gpus
    config["compute_logs"] = {
        "module": "dagster_aws.s3.compute_log_manager",
        "class": "S3ComputeLogManager",
        "config": {
            "bucket": BUCKET,
            "prefix": "dagster/compute-logs",
            "endpoint_url": {"env": "AWS_ENDPOINT_URL"},
            "local_dir": str(root / "compute-logs"),
            "upload_interval": 30,
        },
    }
    return config


def stack_env(root: Path, ports: dict[str, int], password: str, aws_secret: str,
              profile: str, gpus: int) -> dict[str, str]:  # fmt: skip
    """What every service and every step process sees (also written to ``env.sh``)."""
    moto = f"http://127.0.0.1:{ports['s3']}"
    return {
        "DAGSTER_HOME": str(root / "dagster_home"),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(ports["postgres"]),
        "DAGSTER_PG_USER": PG_USER,
        "DAGSTER_PG_PASSWORD": password,
        "DAGSTER_PG_DB": "dagster",
        "S2L_PROFILE": profile,
        "S2L_EXECUTOR": "ray",
        "S2L_GPUS": str(gpus),
        "RAY_ADDRESS": f"http://127.0.0.1:{ports['ray_dashboard']}",
        "S2L_ARTIFACT_ROOT": f"s3://{BUCKET}/artifacts",
        "S2L_SHARD_ROOT": f"s3://{BUCKET}/shards",
        "S2L_CACHE_DIR": str(root / "cache"),
        "S2L_DATA_DIR": str(root / "data"),
        "AWS_ENDPOINT_URL": moto,
        "MLFLOW_S3_ENDPOINT_URL": moto,
        "AWS_ACCESS_KEY_ID": "s2l-local",
        "AWS_SECRET_ACCESS_KEY": aws_secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
        "PYTHONUNBUFFERED": "1",
        # Ray on one machine: its node address is 127.0.0.1, not the machine's network address.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }


# ---------------------------------------------------------------------------- services


def start_ray(root: Path, env: dict[str, str], ports: dict[str, int], cpus: int, gpus: int) -> dict:
    """A Ray head with ``gpus`` logical GPUs (Ray hands them out as CUDA_VISIBLE_DEVICES)."""
    temp = tempfile.mkdtemp(prefix="s2lray-")  # short: Ray's unix sockets live under it
    ray = spawn(
        "ray",
        [bin_of("ray"), "start", "--head", "--block", "--disable-usage-stats",
         f"--num-cpus={cpus}", f"--num-gpus={gpus}", "--node-ip-address=127.0.0.1",
         f"--port={ports['ray']}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={ports['ray_dashboard']}", "--include-dashboard=true",
         f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         f"--temp-dir={temp}"],
        root, env,
    )  # fmt: skip
    ray["temp"] = temp
    url = env["RAY_ADDRESS"]
    wait_for("the Ray dashboard", lambda: check_alive(ray) or http_ok(f"{url}/api/version"), 120)
    return ray


def start_local_ray(root: Path, cpus: int, gpus: int) -> tuple[dict, str]:
    """A Ray head alone on 127.0.0.1 with free ports (tests, benchmarks): the service for
    ``stop_group`` and its dashboard address (RAY_ADDRESS)."""
    (root / "logs").mkdir(parents=True, exist_ok=True)
    ports = {"ray": free_port(), "ray_dashboard": free_port()}
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node address 127.0.0.1
        "RAY_ADDRESS": f"http://127.0.0.1:{ports['ray_dashboard']}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return start_ray(root, env, ports, cpus, gpus), env["RAY_ADDRESS"]


def start_moto(root: Path, env: dict[str, str], port: int) -> dict:
    moto = spawn("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                 root, env)  # fmt: skip
    wait_for("the S3 server", lambda: check_alive(moto) or http_ok(env["AWS_ENDPOINT_URL"]), 60)
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    return moto


# MLflow 3's server starts a job runner and six huey consumers for its GenAI jobs (scorers,
# prompt optimisation), about 27 CPU-s at each start; runs and artifacts need none of them.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def start_mlflow(root: Path, env: dict[str, str], port: int) -> dict:
    backend = (
        f"postgresql+psycopg2://{PG_USER}:{env['DAGSTER_PG_PASSWORD']}@127.0.0.1:"
        f"{env['DAGSTER_PG_PORT']}/mlflow"
    )
    mlflow = spawn(
        "mlflow",
        [bin_of("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend, "--artifacts-destination", f"s3://{BUCKET}/mlflow"],
        root, {**env, **MLFLOW_SERVER_ENV},
    )  # fmt: skip
    url = env["MLFLOW_TRACKING_URI"]
    wait_for("the MLflow server", lambda: check_alive(mlflow) or http_ok(f"{url}/health"), 180)
    return mlflow


def start_dagster(root: Path, env: dict[str, str], port: int) -> list[dict]:
    workspace = str(PROJECT_ROOT / "workspace.yaml")
    daemon = spawn("dagster-daemon", [bin_of("dagster-daemon"), "run", "-w", workspace], root, env)
    web = spawn(
        "dagster-webserver",
        [bin_of("dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace],
        root, env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(
        "the Dagster webserver", lambda: check_alive(web) or http_ok(f"{url}/server_info"), 240
    )
    return [daemon, web]


# ---------------------------------------------------------------------------- up / down


def stack_secrets(root: Path) -> tuple[str, str]:
    """The database password and S3 secret of this stack folder, made once and kept (0600), so
    its PostgreSQL data outlives ``down``; a new folder gets new ones and a new database."""
    path = root / "secrets.json"
    if not path.exists():
        shutil.rmtree(pg_data_dir(root), ignore_errors=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps({"pg": secrets.token_hex(16), "s3": secrets.token_hex(16)}))
    values = json.loads(path.read_text())
    return values["pg"], values["s3"]


def up(root: Path, profile: str = "tiny", gpus: int = 2, cpus: int = 2) -> dict:
    """Start every service (in dependency order) and return the state ``down`` needs."""
    root = root.resolve()
    if (root / STATE).exists():
        raise RuntimeError(f"{root / STATE} exists: the stack is up (or run `down` first)")
    for sub in ("logs", "dagster_home", "cache", "data", "compute-logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = ("postgres", "s3", "mlflow", "ray", "ray_dashboard", "webserver")
    ports = {name: free_port() for name in names}
    password, aws_secret = stack_secrets(root)
    env = {**os.environ, **stack_env(root, ports, password, aws_secret, profile, gpus)}
    # Ray starts each step as `dagster api execute_step`: this environment's scripts first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    (root / "dagster_home" / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(root, gpus)))
    services: list[dict] = []
    state = {"root": str(root), "ports": ports, "services": services}
    started = time.monotonic()
    starts = [
        lambda: [start_postgres(root, ports["postgres"], password)],
        lambda: [start_moto(root, env, ports["s3"])],
        lambda: [start_mlflow(root, env, ports["mlflow"])],
        lambda: [start_ray(root, env, ports, cpus, gpus)],
        lambda: start_dagster(root, env, ports["webserver"]),
    ]
    try:
        for start in starts:
            services.extend(start())
            # Written as each service starts: `down` stops what a killed `up` had started.
            (root / STATE).write_text(json.dumps(state, indent=2))
    except BaseException:
        stop_all(services)
        (root / STATE).unlink(missing_ok=True)
        raise
    state["urls"] = {
        "dagster": f"http://127.0.0.1:{ports['webserver']}",
        "lineage": lineage_url(f"http://127.0.0.1:{ports['webserver']}"),
        "mlflow": env["MLFLOW_TRACKING_URI"],
        "ray": env["RAY_ADDRESS"],
        "s3": env["AWS_ENDPOINT_URL"],
    }
    state["started_in_s"] = round(time.monotonic() - started, 1)
    (root / STATE).write_text(json.dumps(state, indent=2))
    env_sh = root / "env.sh"
    env_sh.touch(mode=0o600)
    exports = stack_env(root, ports, password, aws_secret, profile, gpus)
    env_sh.write_text("".join(f"export {k}={json.dumps(v)}\n" for k, v in exports.items()))
    return state


def stop_all(services: list[dict]) -> None:
    for service in reversed(services):
        if service["kind"] == "postgres":
            stop_postgres(service)
        else:
            stop_group(service)
            if service.get("temp"):
                shutil.rmtree(service["temp"], ignore_errors=True)


def down(root: Path) -> None:
    """Stop every service ``stack.json`` names; data (PostgreSQL, logs) stays for the next up."""
    state_file = root.resolve() / STATE
    if not state_file.exists():
        print(f"{state_file} not found: nothing to stop")
        return
    stop_all(json.loads(state_file.read_text())["services"])
    state_file.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=PROJECT_ROOT / "data" / "stack")
    parser.add_argument("--profile", default="tiny", help="S2L_PROFILE of the deployment")
    parser.add_argument("--gpus", type=int, default=2, help="GPUs the Ray head offers")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--foreground",
        action="store_true",
        help="stay attached: Ctrl-C (or SIGTERM) stops the stack; so does `down` from elsewhere",
    )
    args = parser.parse_args(argv)
    if args.command == "down":
        down(args.dir)
        print("stack stopped")
        return 0
    # SIGTERM and SIGHUP stop a starting (or, in the foreground, a running) stack as Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    state = up(args.dir, args.profile, args.gpus, args.cpus)
    print(f"stack up in {state['started_in_s']} s")
    for name, url in state["urls"].items():
        print(f"  {name:8s} {url}")
    print(f"  env      source {args.dir.resolve() / 'env.sh'}", flush=True)
    if args.foreground:
        stay_up(args.dir, state)
        print("stack stopped", flush=True)
    return 0


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stay_up(root: Path, state: dict) -> None:
    """Wait until interrupted, then stop what ``up`` started; return early when ``down`` (from
    another shell) has stopped it. Reaps each service that ends, so none lingers as a zombie."""
    state_file = root.resolve() / STATE
    try:
        while state_file.exists():
            for proc in RUNNING.values():
                proc.poll()
            time.sleep(0.5)
    except KeyboardInterrupt:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # stopping takes seconds: let it finish
        print("\nstopping the stack", flush=True)
        down(root)
    for proc in RUNNING.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
