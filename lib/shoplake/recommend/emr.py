"""The ALS job on AWS: upload the script to the artifacts bucket and run it as an EMR step.

The very script that runs locally (``als_job.py``, with ``evaluate.py`` shipped through ``--py-files``) runs on
EMR with ``s3://`` paths: it reads ``curated/order_lines/``, writes the serving lists to
``curated/recommendations/``, its split, evaluation lists and ``report.json`` under ``recommend/``, and the
DynamoDB ``recommendations`` table. Either a step on a running cluster (``cluster_id``) or a transient cluster
that terminates after the step. The cluster's EC2 role needs S3 read/write on the lake and artifacts buckets and
``dynamodb:BatchWriteItem`` on the table.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from shoplake import config
from shoplake.errors import ShoplakeError
from shoplake.recommend.als_job import JobConfig, to_args

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
ARTIFACT_PREFIX = "emr/recommend/"
RELEASE_LABEL = "emr-7.5.0"
STEP_NAME = "shoplake-recommend-als"


class EmrError(ShoplakeError):
    """An EMR request failed or the step did not complete."""


def upload_job(bucket: str | None = None) -> dict[str, str]:
    """Upload ``als_job.py`` and ``evaluate.py`` to ``s3://<artifacts>/emr/recommend/``; returns their URIs."""
    bucket = bucket or config.resource_name("artifacts")
    s3 = config.client("s3")
    uris = {}
    for name in ("als_job.py", "evaluate.py"):
        key = ARTIFACT_PREFIX + name
        s3.upload_file(str(HERE / name), bucket, key)
        uris[name] = f"s3://{bucket}/{key}"
    return uris


def job_config(k: int = 10, **overrides: Any) -> JobConfig:
    """The job's parameters with ``s3://`` paths of this stack's lake and DynamoDB table."""
    lake = f"s3://{config.resource_name('lake')}"
    cfg = JobConfig(
        input=f"{lake}/curated/order_lines/",
        output=f"{lake}/recommend/",
        k=k,
        recommendations_output=f"{lake}/curated/recommendations/",
        dynamodb_table=config.resource_name("recommendations"),
        region=config.settings().region,
    )
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    cfg.validate()
    return cfg


def step(uris: dict[str, str], cfg: JobConfig, action_on_failure: str = "CONTINUE") -> dict[str, Any]:
    """The EMR step: ``spark-submit --deploy-mode cluster --py-files evaluate.py als_job.py <job arguments>``."""
    args = [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--conf",
        "spark.sql.session.timeZone=UTC",
        "--py-files",
        uris["evaluate.py"],
        uris["als_job.py"],
        *to_args(cfg),
    ]
    return {
        "Name": STEP_NAME,
        "ActionOnFailure": action_on_failure,
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
    }


def cluster_request(
    job_step: dict[str, Any],
    log_uri: str,
    release_label: str = RELEASE_LABEL,
    instance_type: str = "m5.xlarge",
    core_instances: int = 2,
    service_role: str = "EMR_DefaultRole",
    job_flow_role: str = "EMR_EC2_DefaultRole",
) -> dict[str, Any]:
    """``run_job_flow`` arguments of a transient Spark cluster that runs ``job_step`` and terminates."""
    return {
        "Name": config.resource_name("recommend-als"),
        "ReleaseLabel": release_label,
        "LogUri": log_uri,
        "Applications": [{"Name": "Spark"}],
        "Instances": {
            "InstanceGroups": [
                {"Name": "primary", "InstanceRole": "MASTER", "InstanceType": instance_type, "InstanceCount": 1},
                {
                    "Name": "core",
                    "InstanceRole": "CORE",
                    "InstanceType": instance_type,
                    "InstanceCount": core_instances,
                },
            ],
            "KeepJobFlowAliveWhenNoSteps": False,
            "TerminationProtected": False,
        },
        "Steps": [job_step],
        "ServiceRole": service_role,
        "JobFlowRole": job_flow_role,
        "VisibleToAllUsers": True,
        "Tags": [{"Key": "project", "Value": "shoplake"}, {"Key": "prefix", "Value": config.settings().prefix}],
    }


def submit(cfg: JobConfig | None = None, cluster_id: str | None = None, **cluster_options: Any) -> dict[str, str]:
    """Upload the job and run it: as a step on ``cluster_id``, or on a new transient cluster.

    Returns ``{cluster_id, step_id, script}``.
    """
    cfg = cfg or job_config()
    emr = config.client("emr")
    if cluster_id:
        _check_cluster(emr, cluster_id)
    uris = upload_job()
    job_step = step(uris, cfg)
    try:
        if cluster_id:
            step_id = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[job_step])["StepIds"][0]
        else:
            log_uri = f"s3://{config.resource_name('artifacts')}/emr/logs/"
            cluster_id = emr.run_job_flow(**cluster_request(job_step, log_uri, **cluster_options))["JobFlowId"]
            step_id = emr.list_steps(ClusterId=cluster_id)["Steps"][0]["Id"]
    except emr.exceptions.ClientError as exc:
        raise EmrError(f"EMR refused the ALS job: {exc}; check the EMR roles and the cluster id") from exc
    log.info("submitted the ALS job as step %s on cluster %s", step_id, cluster_id)
    return {"cluster_id": cluster_id, "step_id": step_id, "script": uris["als_job.py"]}


ACCEPTS_STEPS = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")


def _check_cluster(emr: Any, cluster_id: str) -> None:
    """Fail early, with the reason, when ``cluster_id`` cannot take a step (unknown or terminating)."""
    try:
        state = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
    except emr.exceptions.InvalidRequestException as exc:
        raise EmrError(
            f"EMR cluster {cluster_id!r} not found: check the cluster id (aws emr list-clusters --active) "
            "or leave it out to run a transient cluster"
        ) from exc
    if state not in ACCEPTS_STEPS:
        raise EmrError(f"EMR cluster {cluster_id} is {state} and takes no steps: pass a running cluster id or none")


def step_state(cluster_id: str, step_id: str) -> str:
    """``PENDING`` | ``RUNNING`` | ``COMPLETED`` | ``FAILED`` | ``CANCELLED`` | ..."""
    return config.client("emr").describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]["State"]


def wait(cluster_id: str, step_id: str, timeout_s: float = 3600, poll_s: float = 30) -> str:
    """Wait for the step to finish; raise :class:`EmrError` unless it completed."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = step_state(cluster_id, step_id)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED"):
            break
        if time.monotonic() > deadline:
            raise EmrError(f"step {step_id} still {state} after {timeout_s:.0f} s; see the EMR console")
        time.sleep(poll_s)
    if state != "COMPLETED":
        raise EmrError(f"step {step_id} on {cluster_id} ended {state}: read the step's stderr under the log URI")
    return state
