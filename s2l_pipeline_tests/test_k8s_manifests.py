"""The Kubernetes Jobs the k8s executor would create for each step, rendered by dagster-k8s's own
code (the run launcher the Helm chart configures, the executor's container context, the step's
``dagster-k8s/config`` tags) and validated against Kubernetes' schema by kubernetes-validate."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import kubernetes_validate
import pytest
import yaml

pytest.importorskip("dagster_k8s")

from dagster._core.definitions.reconstruct import ReconstructableRepository  # noqa: E402
from dagster._core.execution.api import create_execution_plan  # noqa: E402
from dagster._core.storage.dagster_run import DagsterRun  # noqa: E402
from dagster._grpc.types import ExecuteStepArgs  # noqa: E402
from dagster_k8s import K8sRunLauncher  # noqa: E402
from dagster_k8s.container_context import K8sContainerContext  # noqa: E402
from dagster_k8s.job import (  # noqa: E402
    construct_dagster_k8s_job,
    get_k8s_job_name,
    get_user_defined_k8s_config,
)

from s2l_pipeline.defs.executors import K8S_EXECUTOR_CONFIG  # noqa: E402

from .conftest import PROJECT_ROOT  # noqa: E402

K8S_VERSION = "1.33.0"
HELM_VALUES = PROJECT_ROOT / "infra" / "helm" / "values.yaml"


def _launcher(tmp_path: Path) -> K8sRunLauncher:
    """The run launcher as infra/helm/values.yaml configures it (no cluster is contacted)."""
    values = yaml.safe_load(HELM_VALUES.read_text())
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "unused"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    deployment = values["dagster-user-deployments"]["deployments"][0]
    image = deployment["image"]
    return K8sRunLauncher(
        service_account_name="dagster",
        instance_config_map="dagster-instance",
        postgres_password_secret=values["global"]["postgresqlSecretName"],
        dagster_home="/opt/dagster/dagster_home",
        job_image=f"{image['repository']}:{image['tag']}",
        image_pull_policy=image["pullPolicy"],
        job_namespace="s2l",
        env_secrets=[s["name"] for s in k8s["envSecrets"]],
        kubeconfig_file=str(kubeconfig),
        load_incluster_config=False,
    )


def render_step_jobs(tmp_path: Path) -> dict[str, dict]:
    """Step key -> the Job manifest (a dict) the k8s executor would submit for that step."""
    launcher = _launcher(tmp_path)
    recon = ReconstructableRepository.for_module(
        "s2l_pipeline.definitions", "defs", working_directory=str(PROJECT_ROOT)
    ).get_reconstructable_job("s2l_job")
    job = recon.get_definition()
    plan = create_execution_plan(job, run_config={}, tags={"dagster/partition": "selected"})
    # What the chart hands the code server (includeConfigInLaunchedRuns): the deployment's env.
    values = yaml.safe_load(HELM_VALUES.read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    code_context = {
        "k8s": {
            "env": deployment["env"],
            "env_secrets": [s["name"] for s in deployment["envSecrets"]],
            "namespace": "s2l",
        }
    }
    origin = recon.get_python_origin()
    origin = origin._replace(
        repository_origin=origin.repository_origin._replace(container_context=code_context)
    )
    run = DagsterRun(
        job_name="s2l_job", run_id="0" * 8 + "-0000-0000-0000-" + "0" * 12, job_code_origin=origin
    )
    executor_context = K8sContainerContext.create_from_config({"k8s": K8S_EXECUTOR_CONFIG})
    api = kubernetes.client.ApiClient()
    manifests = {}
    for step in plan.step_dict.values():
        key = step.key
        context = (
            K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
            .merge(executor_context)
            .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step.tags)))
        )
        args = ExecuteStepArgs(
            job_origin=origin,
            run_id=run.run_id,
            step_keys_to_execute=[key],
            instance_ref=None,
        )
        name = f"dagster-step-{get_k8s_job_name(run.run_id, key)}"
        k8s_job = construct_dagster_k8s_job(
            job_config=context.get_k8s_job_config(None, launcher),
            args=args.get_command_args(skip_serialized_namedtuple=True),
            job_name=name,
            pod_name=name,
            component="step_worker",
            user_defined_k8s_config=context.run_k8s_config,
            labels={"dagster/job": "s2l_job", "dagster/op": key},
            env_vars=[*args.get_command_env(), {"name": "DAGSTER_RUN_STEP_KEY", "value": key}],
        )
        manifests[key] = api.sanitize_for_serialization(k8s_job)
    return manifests


def _container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def test_step_jobs_are_valid_and_only_gpu_steps_get_gpus(tmp_path: Path) -> None:
    manifests = render_step_jobs(tmp_path)
    gpu_steps = {
        "proxy_checkpoints",
        "loss_trajectories.score_trajectory_unit[?]",
        "target_model",
        "target_evaluation",
    }
    assert gpu_steps <= set(manifests), sorted(manifests)
    for key, manifest in manifests.items():
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        limits = _container(manifest)["resources"].get("limits", {})
        pod = manifest["spec"]["template"]["spec"]
        if key in gpu_steps:
            assert limits.get("nvidia.com/gpu") == "1", key
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, key
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
                "tolerations"
            ]
        else:
            assert "nvidia.com/gpu" not in limits, key
            assert "nodeSelector" not in pod and "tolerations" not in pod, key
    env = {e["name"]: e.get("value") for e in _container(manifests["target_model"])["env"]}
    assert env["S2L_EXECUTOR"] == "k8s" and env["DAGSTER_RUN_STEP_KEY"] == "target_model"
    assert env["S2L_ARTIFACT_ROOT"].startswith("s3://")
    # Credentials come from Kubernetes secrets, never from literal values in the manifest.
    env_from = _container(manifests["target_model"]).get("envFrom", [])
    assert {"secretRef": {"name": "s2l-aws"}} in env_from
    assert not [k for k in env if k.startswith("AWS_SECRET")]


def test_invalid_manifest_is_refused(tmp_path: Path) -> None:
    """The validator does reject a broken Job (the check above can fail)."""
    manifest = render_step_jobs(tmp_path)["target_model"]
    _container(manifest)["resources"]["limits"]["nvidia.com/gpu"] = {"count": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
