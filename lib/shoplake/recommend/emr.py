"""The ALS job on AWS: upload the job to the artifacts bucket, run it as an EMR step, read its report back from S3.

The very script that runs locally (``als_job.py``) runs on EMR with ``s3://`` paths: it reads
``curated/order_lines/`` of the lake, writes the serving lists to ``curated/recommendations/`` and the DynamoDB
``recommendations`` table, and its split, evaluation lists and ``report.json`` under
``s3://<artifacts>/emr/recommend/runs/<run id>/``, where :class:`EmrTrainer` reads them back (the same report as a
local run). Either a step on a running cluster (``cluster_id``) or a transient cluster that ends with the step.

What the cluster runs, fixed here so that it does not depend on the release's defaults:

* Python: :data:`CLUSTER_PYTHON` (EMR 7.x's default ``python3``, 3.9) for the driver and the executors, set in the
  step (``spark.pyspark.python`` and the YARN environment) and in ``spark-env``; the job is kept 3.9-compatible
  (``tests/aws/test_recommend_emr.py`` proves it with ``vermin`` and ``python3.9``).
* Packages: the job imports numpy and pandas on the driver and converts through Arrow; a bootstrap action
  (``emr_bootstrap.sh``, uploaded with the job) installs :data:`JOB_PACKAGES` pinned into that Python on every node.
  A reused cluster (``cluster_id``) must have been started with it (:func:`start_cluster`); this is checked.
* Code: the shoplake modules the job imports (``als_job.SHIPPED_MODULES``) go in a zip through ``--py-files``.
* Roles: the ``emr-service`` and ``emr-ec2`` roles of ``infra/resources.yaml`` (the EC2 one as instance profile).
  The service role's AWS managed policy (``AmazonEMRServicePolicy_v2``) only acts on resources tagged
  ``for-use-with-amazon-emr-managed-policies=true``: the cluster carries the tag, and the subnet must have it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shoplake import config
from shoplake.errors import ConfigError, ShoplakeError
from shoplake.recommend.als_job import SHIPPED_MODULES, JobConfig, to_args

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
ARTIFACT_PREFIX = "emr/recommend/"
RUNS_PREFIX = "emr/recommend/runs/"
LOGS_PREFIX = "emr/logs/"
RELEASE_LABEL = "emr-7.5.0"  # Spark 3.5.2, Amazon Linux 2023, python3 = 3.9
CLUSTER_PYTHON = "/usr/bin/python3"
CLUSTER_PYTHON_VERSION = (3, 9)
# what als_job imports beyond pyspark and the standard library, pinned to versions with cp39 manylinux wheels
# (x86_64 and aarch64) that Spark 3.5's Arrow conversions support; boto3 only when the image lacks it
JOB_PACKAGES = ("numpy==1.26.4", "pandas==2.0.3", "pyarrow==14.0.2", "boto3==1.35.99")
BOOTSTRAP_NAME = "shoplake-job-python-packages"
STEP_NAME = "shoplake-recommend-als"
INSTANCE_TYPE = "m5.xlarge"
SERVICE_ROLE = "emr-service"  # iam_role names in infra/resources.yaml
EC2_ROLE = "emr-ec2"
MANAGED_POLICY_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
IDLE_TIMEOUT_S = 3600  # a cluster started for reuse ends itself after an idle hour
SPARK_CONF = {
    "spark.pyspark.python": CLUSTER_PYTHON,
    "spark.pyspark.driver.python": CLUSTER_PYTHON,
    "spark.yarn.appMasterEnv.PYSPARK_PYTHON": CLUSTER_PYTHON,
    "spark.executorEnv.PYSPARK_PYTHON": CLUSTER_PYTHON,
    "spark.sql.session.timeZone": "UTC",
    # pandas <-> Spark through Arrow on the driver's JVM: executors need no pandas; no silent row-by-row fallback
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
}
# Glue types of the serving lists the job writes to curated/recommendations/ (als_job.run, ``serving``)
SERVING_COLUMNS = {
    "customer_id": "string",
    "rank": "int",
    "stock_code": "string",
    "score": "double",
    "description": "string",
    "model": "string",
    "generated_at": "string",
}
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED")
ACCEPTS_STEPS = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")


class EmrError(ShoplakeError):
    """An EMR request failed or the step did not complete."""


# --------------------------------------------------------------------------- names


def artifacts_bucket() -> str:
    """The artifacts bucket's real name (``s3_bucket:artifacts`` of infra/resources.yaml)."""
    from shoplake import infra

    return infra.physical_name(infra.find("s3_bucket", "artifacts"))


def role_name(name: str) -> str:
    """The real name of an aws-only ``iam_role`` of infra/resources.yaml (the instance profile has the same name)."""
    from shoplake import infra

    return infra.physical_name(infra.find("iam_role", name, target="aws"))


def log_uri() -> str:
    return f"s3://{artifacts_bucket()}/{LOGS_PREFIX}"


def new_run_id() -> str:
    """A UTC timestamp naming one run's output folder."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


# --------------------------------------------------------------------------- what is uploaded


def job_bundle() -> bytes:
    """The zip for ``--py-files``: the shoplake modules ``als_job.py`` imports, package layout kept.

    ``shoplake/recommend/__init__.py`` is replaced by an empty one: the real one imports the whole recommender
    (pandas, boto3 sessions, ...), and zipimport does not resolve a package without ``__init__.py``.
    Deterministic (sorted entries, fixed timestamps), so its hash names the upload.
    """
    from shoplake.resources import deterministic_zip

    package = HERE.parent
    files = {f"shoplake/{name}": (package / name).read_bytes() for name in SHIPPED_MODULES}
    files.setdefault(
        "shoplake/recommend/__init__.py", b'"""The modules of shoplake.recommend the EMR job imports."""\n'
    )
    return deterministic_zip(files)


def job_files() -> dict[str, bytes]:
    """Everything the cluster needs, by file name: the script, the module zip, the bootstrap script."""
    return {
        "als_job.py": (HERE / "als_job.py").read_bytes(),
        "shoplake-job.zip": job_bundle(),
        "emr_bootstrap.sh": (HERE / "emr_bootstrap.sh").read_bytes(),
    }


def upload_job(bucket: str | None = None) -> dict[str, str]:
    """Upload :func:`job_files` to ``s3://<artifacts>/emr/recommend/<content hash>/``; returns their URIs by name.

    The folder is named by the content, so a step always runs the files it was submitted with.
    """
    bucket = bucket or artifacts_bucket()
    files = job_files()
    digest = hashlib.sha256(b"".join(hashlib.sha256(files[name]).digest() for name in sorted(files))).hexdigest()
    s3 = config.client("s3")
    uris = {}
    for name, body in files.items():
        key = f"{ARTIFACT_PREFIX}{digest[:16]}/{name}"
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        except s3.exceptions.NoSuchBucket as exc:
            raise EmrError(f"bucket {bucket} does not exist: provision first (shoplake infra apply)") from exc
        uris[name] = f"s3://{bucket}/{key}"
    return uris


# --------------------------------------------------------------------------- requests


def job_config(run_id: str | None = None, k: int = 10, **overrides: Any) -> JobConfig:
    """The job's parameters: ``s3://`` paths of this stack's lake, a run folder in the artifacts bucket, the table."""
    from shoplake import lake
    from shoplake.recommend import serve

    lake_uri = f"s3://{lake.bucket()}"
    cfg = JobConfig(
        input=f"{lake_uri}/curated/order_lines/",
        output=f"s3://{artifacts_bucket()}/{RUNS_PREFIX}{run_id or new_run_id()}/",
        k=k,
        recommendations_output=f"{lake_uri}/curated/recommendations/",
        dynamodb_table=serve.table_name(),
        region=config.settings().region,
    )
    for key, value in overrides.items():
        if value is not None:
            if not hasattr(cfg, key):
                raise EmrError(f"unknown ALS job parameter {key!r}; known: {sorted(vars(cfg))}")
            setattr(cfg, key, value)
    cfg.validate()
    return cfg


def step(uris: dict[str, str], cfg: JobConfig, action_on_failure: str = "CONTINUE") -> dict[str, Any]:
    """The EMR step: ``spark-submit --deploy-mode cluster --conf ... --py-files <zip> als_job.py <job arguments>``."""
    conf = [part for key, value in SPARK_CONF.items() for part in ("--conf", f"{key}={value}")]
    args = [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        *conf,
        "--py-files",
        uris["shoplake-job.zip"],
        uris["als_job.py"],
        *to_args(cfg),
    ]
    return {
        "Name": STEP_NAME,
        "ActionOnFailure": action_on_failure,
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
    }


def bootstrap_action(uris: dict[str, str]) -> dict[str, Any]:
    """Install :data:`JOB_PACKAGES` into :data:`CLUSTER_PYTHON` on every node before Spark starts."""
    return {
        "Name": BOOTSTRAP_NAME,
        "ScriptBootstrapAction": {"Path": uris["emr_bootstrap.sh"], "Args": [CLUSTER_PYTHON, *JOB_PACKAGES]},
    }


def cluster_request(
    uris: dict[str, str],
    steps: list[dict[str, Any]],
    keep_alive: bool = False,
    release_label: str = RELEASE_LABEL,
    instance_type: str = INSTANCE_TYPE,
    core_instances: int = 2,
    subnet_id: str | None = None,
) -> dict[str, Any]:
    """``run_job_flow`` arguments: a Spark cluster with the job's Python set up, running ``steps``.

    ``keep_alive=False``: transient, it terminates after the steps; ``True``: it waits for steps and terminates
    itself after :data:`IDLE_TIMEOUT_S` idle. ``subnet_id``: a subnet tagged ``for-use-with-amazon-emr-managed-
    policies=true`` (the service role's managed policy requires it); default: EMR's choice in the default VPC.
    """
    instances: dict[str, Any] = {
        "InstanceGroups": [
            {"Name": "primary", "InstanceRole": "MASTER", "InstanceType": instance_type, "InstanceCount": 1},
            {"Name": "core", "InstanceRole": "CORE", "InstanceType": instance_type, "InstanceCount": core_instances},
        ],
        "KeepJobFlowAliveWhenNoSteps": keep_alive,
        "TerminationProtected": False,
    }
    if subnet_id:
        instances["Ec2SubnetId"] = subnet_id
    request = {
        "Name": config.resource_name("recommend-als"),
        "ReleaseLabel": release_label,
        "LogUri": log_uri(),
        "Applications": [{"Name": "Spark"}],
        "Configurations": [
            {
                "Classification": "spark-env",
                "Configurations": [{"Classification": "export", "Properties": {"PYSPARK_PYTHON": CLUSTER_PYTHON}}],
            }
        ],
        "BootstrapActions": [bootstrap_action(uris)],
        "Instances": instances,
        "Steps": steps,
        "ServiceRole": role_name(SERVICE_ROLE),
        "JobFlowRole": role_name(EC2_ROLE),
        "VisibleToAllUsers": True,
        "Tags": [
            {"Key": "project", "Value": "shoplake"},
            {"Key": "prefix", "Value": config.settings().prefix},
            MANAGED_POLICY_TAG,
        ],
    }
    if keep_alive:
        request["AutoTerminationPolicy"] = {"IdleTimeout": IDLE_TIMEOUT_S}
    return request


def _refused(exc: Exception) -> EmrError:
    return EmrError(f"EMR refused the request: {exc}; check the EMR roles (shoplake infra apply) and the cluster id")


def submit(cfg: JobConfig | None = None, cluster_id: str | None = None, **cluster_options: Any) -> dict[str, str]:
    """Upload the job and run it: as a step on ``cluster_id``, or on a new transient cluster.

    Returns ``{cluster_id, step_id, script, output}``.
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
            cluster_id = emr.run_job_flow(**cluster_request(uris, [job_step], **cluster_options))["JobFlowId"]
            step_id = emr.list_steps(ClusterId=cluster_id)["Steps"][0]["Id"]
    except emr.exceptions.ClientError as exc:
        raise _refused(exc) from exc
    log.info("submitted the ALS job as step %s on cluster %s", step_id, cluster_id)
    return {"cluster_id": cluster_id, "step_id": step_id, "script": uris["als_job.py"], "output": cfg.output}


def start_cluster(**cluster_options: Any) -> str:
    """Start a Spark cluster set up for the job that waits for steps (reuse it with ``cluster_id``); returns its id.

    It terminates itself after an idle hour; ``aws emr terminate-clusters --cluster-ids ID`` ends it sooner.
    """
    if config.by_target(local=True, aws=False):  # the local target trains in-process: no EMR to start
        raise ConfigError(
            "an EMR cluster runs on the aws target only: set SHOPLAKE_TARGET=aws (locally, train runs here)"
        )
    emr = config.client("emr")
    uris = upload_job()
    try:
        return emr.run_job_flow(**cluster_request(uris, [], keep_alive=True, **cluster_options))["JobFlowId"]
    except emr.exceptions.ClientError as exc:
        raise _refused(exc) from exc


def _check_cluster(emr: Any, cluster_id: str) -> None:
    """Fail early, with the reason, when ``cluster_id`` cannot run the job (unknown, ending, or not set up)."""
    try:
        cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    except emr.exceptions.InvalidRequestException as exc:
        raise EmrError(
            f"EMR cluster {cluster_id!r} not found: check the cluster id (aws emr list-clusters --active) "
            "or leave it out to run a transient cluster"
        ) from exc
    state = cluster["Status"]["State"]
    if state not in ACCEPTS_STEPS:
        raise EmrError(f"EMR cluster {cluster_id} is {state} and takes no steps: pass a running cluster id or none")
    if "spark" not in {a.get("Name", "").lower() for a in cluster.get("Applications", [])}:
        raise EmrError(f"EMR cluster {cluster_id} has no Spark: start one with shoplake.recommend.emr.start_cluster()")
    actions = emr.list_bootstrap_actions(ClusterId=cluster_id).get("BootstrapActions", [])
    if BOOTSTRAP_NAME not in {a.get("Name") for a in actions}:
        raise EmrError(
            f"EMR cluster {cluster_id} was not started with the {BOOTSTRAP_NAME} bootstrap action (pinned numpy, "
            "pandas, pyarrow for its python3.9): start one with `shoplake recommend cluster` or leave cluster_id out"
        )


# --------------------------------------------------------------------------- waiting and reading back


def step_state(cluster_id: str, step_id: str) -> str:
    """``PENDING`` | ``RUNNING`` | ``COMPLETED`` | ``FAILED`` | ``CANCELLED`` | ..."""
    return config.client("emr").describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]["State"]


def wait(cluster_id: str, step_id: str, timeout_s: float = 3600, poll_s: float = 30, progress: bool = False) -> str:
    """Wait for the step to finish; raise :class:`EmrError` unless it completed."""
    from tqdm.auto import tqdm

    deadline = time.monotonic() + timeout_s
    with tqdm(desc=f"EMR step {step_id}", unit="poll", disable=not progress) as bar:
        while True:
            state = step_state(cluster_id, step_id)
            bar.set_postfix_str(state, refresh=False)
            bar.update()
            if state in FINAL_STATES:
                break
            if time.monotonic() > deadline:
                raise EmrError(f"step {step_id} still {state} after {timeout_s:.0f} s; see the EMR console")
            time.sleep(poll_s)
    if state != "COMPLETED":
        raise EmrError(
            f"step {step_id} on {cluster_id} ended {state}: read its stderr under {log_uri()}{cluster_id}/steps/{step_id}/"
        )
    return state


def _split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


def read_run(output: str, local_dir: str | Path) -> dict[str, Any]:
    """The ``report.json`` of a finished run under ``output`` (``s3://``), with its split copied to ``local_dir``.

    The split and evaluation lists (``split/``, ``eval_recommendations/``) are what the baselines compare against,
    so they come down like a local run leaves them; the serving lists stay in the lake.
    """
    import json
    import shutil

    s3 = config.client("s3")
    bucket, prefix = _split_uri(output.rstrip("/") + "/")
    try:
        body = s3.get_object(Bucket=bucket, Key=prefix + "report.json")["Body"].read()
    except s3.exceptions.NoSuchKey as exc:
        raise EmrError(f"{output}report.json does not exist: the step did not finish its run (see its log)") from exc
    report = json.loads(body)
    local = Path(local_dir)
    if local.exists():
        shutil.rmtree(local)
    for folder in ("split/", "eval_recommendations/"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + folder):
            for item in page.get("Contents", []):
                target = local / item["Key"][len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(target))
    (local / "report.json").write_bytes(body)
    return report


def register_recommendations(path: str) -> str:
    """Register the serving lists the job wrote at ``path`` as the Glue table ``recommendations``."""
    import awswrangler as wr

    from shoplake import lake

    database = lake.ensure_database()
    wr.catalog.create_parquet_table(
        database=database,
        table="recommendations",
        path=path,
        columns_types=SERVING_COLUMNS,
        mode="overwrite",
        boto3_session=config.configure_wrangler(),
    )
    return database


class EmrTrainer:
    """The aws backend of :func:`shoplake.recommend.train`: the ALS job as an EMR step, its report read from S3."""

    name = "emr"

    def train(
        self,
        cluster_id: str | None = None,
        publish: bool = True,
        timeout_s: float = 3600,
        poll_s: float = 30,
        **job_options: Any,
    ) -> dict[str, Any]:
        """Run the job on EMR, wait for it, and return its report in the shape of a local run's.

        ``cluster_id``: a running cluster started by :func:`start_cluster` (default: a transient cluster).
        ``publish=False`` skips the serving refit and the DynamoDB write (``--no-serve``).
        """
        from shoplake.recommend.data import run_dir

        cfg = job_config(serve=publish, **job_options)
        submitted = submit(cfg, cluster_id=cluster_id)
        began = time.perf_counter()
        wait(submitted["cluster_id"], submitted["step_id"], timeout_s=timeout_s, poll_s=poll_s, progress=True)
        report = read_run(cfg.output, run_dir())
        if publish:
            register_recommendations(cfg.recommendations_output or "")
            report["lake"] = {
                "path": cfg.recommendations_output,
                "rows": int(report["counts"].get("serving_rows", 0)),
                "customers": int(report["counts"]["serving_customers"]),
            }
        report["output"] = str(run_dir())
        report["backend"] = {
            "kind": self.name,
            "cluster_id": submitted["cluster_id"],
            "step_id": submitted["step_id"],
            "run": cfg.output,
            "step_seconds": time.perf_counter() - began,
        }
        return report
