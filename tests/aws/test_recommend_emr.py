"""Training on aws: the ALS job as an EMR step, proven without an account.

* the job and every module it ships need at most the cluster's Python 3.9 (vermin), and it imports and parses its
  arguments under a real ``python3.9 -I -S`` with only the ``--py-files`` zip beside it;
* the EMR requests (``RunJobFlow``, ``AddJobFlowSteps``, ...) validate against botocore's EMR model (moto in-process)
  with the release, Python, bootstrap and uploaded files a cluster needs;
* ``recommend.train`` on aws waits for the step and reads the run back from S3 in the shape of a local report; the
  job's own boto3 calls, made as the ``emr-ec2`` role, are granted by that role's policy in ``infra/resources.yaml``.
"""

from __future__ import annotations

import ast
import fnmatch
import glob
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shoplake import config
from shoplake.recommend import als_job, emr

pytestmark = pytest.mark.aws

PACKAGE = Path(als_job.__file__).resolve().parents[1]  # lib/shoplake
VERMIN = Path(sys.executable).with_name("vermin")
# what the cluster has beside the standard library: Spark's own pyspark, the bootstrap's packages, optional tqdm
CLUSTER_PACKAGES = {"pyspark", "numpy", "pandas", "boto3", "tqdm"}


def _shipped_files() -> list[Path]:
    return [Path(als_job.__file__)] + [PACKAGE / name for name in als_job.SHIPPED_MODULES]


def _python39() -> str | None:
    """A working Python 3.9 interpreter (PATH, or pyenv's versions), or None."""
    candidates = ["python3.9", *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))]
    for candidate in candidates:
        try:
            done = subprocess.run(
                [candidate, "-I", "-S", "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == "(3, 9)":
            return candidate
    return None


# --------------------------------------------------------------------------- the cluster's Python


def test_job_and_shipped_modules_need_at_most_python_3_9(tmp_path):
    if not VERMIN.exists():
        pytest.skip(f"vermin is not installed in {VERMIN.parent} (pip install vermin)")
    assert emr.CLUSTER_PYTHON_VERSION == (3, 9)
    target = "-t={}.{}-".format(*emr.CLUSTER_PYTHON_VERSION)
    done = subprocess.run(
        [str(VERMIN), target, "--no-tips", "--violations", *map(str, _shipped_files())],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # the same check catches what broke the step before (datetime.UTC, zip(strict=))
    bad = tmp_path / "bad.py"
    bad.write_text("from datetime import UTC\nprint(list(zip([1], [2], strict=True)), UTC)\n")
    caught = subprocess.run(
        [str(VERMIN), target, "--no-tips", "--violations", str(bad)], capture_output=True, text=True
    )
    assert caught.returncode != 0 and "datetime.UTC" in caught.stdout


def test_job_imports_and_parses_under_python_3_9(tmp_path):
    python = _python39()
    if python is None:
        pytest.skip("no Python 3.9 interpreter here (EMR 7's python3); vermin still checks the minimum version")
    (tmp_path / "als_job.py").write_bytes(Path(als_job.__file__).read_bytes())
    (tmp_path / "shoplake-job.zip").write_bytes(emr.job_bundle())
    cfg = emr.JobConfig(
        input="s3://lake/curated/order_lines/",
        output="s3://artifacts/emr/recommend/runs/1/",
        k=7,
        ranks=[8, 16],
        alphas=[2.0],
        holdout_weeks=3,
        search=False,
        recommendations_output="s3://lake/curated/recommendations/",
        dynamodb_table="shoplake-x-recommendations",
        region="eu-west-1",
    )
    code = """
import json, sys
from datetime import datetime
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/shoplake-job.zip"]
import als_job
cfg = als_job.parse_args(json.loads(sys.argv[2]))
try:
    als_job.JobConfig(input="i", output="o", holdout_weeks=0).validate()
    refused = ""
except als_job.JobError as exc:
    refused = type(exc).__mro__[1].__name__ + ": " + str(exc)
metrics = als_job.evaluate.evaluate_ranking({"c1": ["a", "b"], "c2": ["c"]}, {"c1": {"b"}, "c2": {"x"}}, 2, 4)
print(json.dumps({
    "version": list(sys.version_info[:2]),
    "config": als_job.asdict(cfg),
    "args": als_job.to_args(cfg),
    "refused": refused,
    "map": metrics["map@2"],
    "iso": als_job._iso(datetime(2026, 1, 2, 3, 4, 5)),
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("numpy", "pandas", "pyspark", "boto3")),
}))
"""
    done = subprocess.run(
        [python, "-I", "-S", "-c", code, str(tmp_path), json.dumps(als_job.to_args(cfg))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert tuple(out["version"]) == emr.CLUSTER_PYTHON_VERSION
    assert out["config"] == als_job.asdict(cfg)  # the step's arguments mean the same on the cluster
    assert out["args"] == als_job.to_args(cfg)
    assert out["refused"].startswith("ShoplakeError: --holdout-weeks")
    assert out["map"] == pytest.approx(0.25)  # c1: b at rank 2 → AP 0.5; c2: 0
    assert out["iso"] == "2026-01-02T03:04:05Z"
    assert out["modules"] == []  # the command line loads without numpy, pandas, pyspark or boto3


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0] if node.module.split(".")[0] != "shoplake" else node.module)
    return roots


def test_the_job_imports_only_what_the_cluster_has():
    shipped = {"shoplake." + name.removesuffix(".py").replace("/", ".") for name in als_job.SHIPPED_MODULES}
    shipped = {name.removesuffix(".__init__") for name in shipped}
    for path in _shipped_files():
        for root in _imported_roots(path) - {"__future__"}:
            if root.startswith("shoplake"):
                # "from shoplake.recommend import evaluate" names the module shoplake.recommend.evaluate
                assert root in shipped or any(s.startswith(root + ".") for s in shipped), (path.name, root)
            else:
                assert root in sys.stdlib_module_names or root in CLUSTER_PACKAGES, (path.name, root)
    pinned = {spec.split("==")[0] for spec in emr.JOB_PACKAGES}
    assert all("==" in spec for spec in emr.JOB_PACKAGES), emr.JOB_PACKAGES
    # pandas/numpy are imported; pyarrow carries the Arrow conversions the step turns on (with no fallback)
    assert {"numpy", "pandas", "pyarrow", "boto3"} <= pinned
    assert emr.SPARK_CONF["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    assert emr.SPARK_CONF["spark.sql.execution.arrow.pyspark.fallback.enabled"] == "false"


def test_bootstrap_script_is_valid_bash():
    script = Path(emr.HERE / "emr_bootstrap.sh")
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert script.read_text().startswith("#!/bin/bash\n")


# --------------------------------------------------------------------------- EMR requests (moto in-process)


@pytest.fixture
def buckets(aws_target):
    """The lake and artifacts buckets of this prefix, in the test region."""
    from shoplake import lake

    s3 = config.client("s3")
    for name in (lake.bucket(), emr.artifacts_bucket()):
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": config.settings().region})
    aws_target.clear()
    return aws_target


def _calls(recorder, operation):
    return [c.params for c in recorder.calls if c.operation == operation]


def _object(uri: str) -> bytes:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return config.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def _job_arguments(args: list[str]) -> list[str]:
    script = next(i for i, a in enumerate(args) if a.endswith("/als_job.py"))
    return args[script + 1 :]


def _check_step(job_step: dict, cfg) -> None:
    assert job_step["Name"] == emr.STEP_NAME
    assert job_step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    args = job_step["HadoopJarStep"]["Args"]
    assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    confs = {args[i + 1] for i, a in enumerate(args) if a == "--conf"}
    assert confs == {f"{k}={v}" for k, v in emr.SPARK_CONF.items()}
    assert f"spark.pyspark.python={emr.CLUSTER_PYTHON}" in confs
    assert f"spark.yarn.appMasterEnv.PYSPARK_PYTHON={emr.CLUSTER_PYTHON}" in confs
    # the uploaded files are exactly what runs: the script and the zip of the modules it imports
    assert _object(args[args.index("--py-files") + 1]) == emr.job_bundle()
    script = next(a for a in args if a.endswith("/als_job.py"))
    assert _object(script) == Path(als_job.__file__).read_bytes()
    assert als_job.parse_args(_job_arguments(args)) == cfg


def test_transient_cluster_request(buckets):
    from shoplake import lake

    cfg = emr.job_config(k=7, holdout_weeks=3)
    submitted = emr.submit(cfg, core_instances=3)

    (request,) = _calls(buckets, "RunJobFlow")
    assert request["ReleaseLabel"] == emr.RELEASE_LABEL and request["ReleaseLabel"].startswith("emr-7.")
    assert request["Applications"] == [{"Name": "Spark"}]
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False  # transient
    assert {
        (g["InstanceRole"], g["InstanceType"], g["InstanceCount"]) for g in request["Instances"]["InstanceGroups"]
    } == {
        ("MASTER", emr.INSTANCE_TYPE, 1),
        ("CORE", emr.INSTANCE_TYPE, 3),
    }
    prefix = config.settings().prefix
    assert request["ServiceRole"] == f"shoplake-{prefix}-emr-service"
    assert request["JobFlowRole"] == f"shoplake-{prefix}-emr-ec2"
    assert emr.MANAGED_POLICY_TAG in request["Tags"]
    assert request["LogUri"] == f"s3://{emr.artifacts_bucket()}/{emr.LOGS_PREFIX}"
    (spark_env,) = [c for c in request["Configurations"] if c["Classification"] == "spark-env"]
    assert spark_env["Configurations"][0]["Properties"] == {"PYSPARK_PYTHON": emr.CLUSTER_PYTHON}
    (bootstrap,) = request["BootstrapActions"]
    assert bootstrap["Name"] == emr.BOOTSTRAP_NAME
    assert bootstrap["ScriptBootstrapAction"]["Args"] == [emr.CLUSTER_PYTHON, *emr.JOB_PACKAGES]
    assert _object(bootstrap["ScriptBootstrapAction"]["Path"]) == (emr.HERE / "emr_bootstrap.sh").read_bytes()
    (job_step,) = request["Steps"]
    _check_step(job_step, cfg)

    assert cfg.input == f"s3://{lake.bucket()}/curated/order_lines/"
    assert cfg.recommendations_output == f"s3://{lake.bucket()}/curated/recommendations/"
    assert cfg.output.startswith(f"s3://{emr.artifacts_bucket()}/{emr.RUNS_PREFIX}")
    assert cfg.dynamodb_table == f"shoplake-{prefix}-recommendations" and cfg.region == "eu-west-1"
    assert submitted["output"] == cfg.output
    cluster = config.client("emr").describe_cluster(ClusterId=submitted["cluster_id"])["Cluster"]
    assert cluster["ReleaseLabel"] == emr.RELEASE_LABEL and cluster["AutoTerminate"] is True


def test_step_on_a_cluster_started_for_reuse(buckets):
    cluster_id = emr.start_cluster()
    (request,) = _calls(buckets, "RunJobFlow")
    assert request["Steps"] == [] and request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": emr.IDLE_TIMEOUT_S}  # never billed forever

    cfg = emr.job_config(search=False)
    submitted = emr.submit(cfg, cluster_id=cluster_id)
    (added,) = _calls(buckets, "AddJobFlowSteps")
    assert added["JobFlowId"] == cluster_id == submitted["cluster_id"]
    _check_step(added["Steps"][0], cfg)
    assert "--no-search" in added["Steps"][0]["HadoopJarStep"]["Args"]
    assert {"elasticmapreduce:DescribeCluster", "elasticmapreduce:ListBootstrapActions"} <= buckets.operations()


def test_a_cluster_without_the_bootstrap_or_unknown_is_refused(buckets):
    bare = config.client("emr").run_job_flow(
        Name="someone-elses",
        ReleaseLabel=emr.RELEASE_LABEL,
        Applications=[{"Name": "Spark"}],
        Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]
    with pytest.raises(emr.EmrError, match="bootstrap action"):
        emr.submit(emr.job_config(), cluster_id=bare)
    with pytest.raises(emr.EmrError, match="cluster id"):
        emr.submit(emr.job_config(), cluster_id="j-DOESNOTEXIST")
    assert not _calls(buckets, "AddJobFlowSteps")


# --------------------------------------------------------------------------- the run, read back


def _parquet(rows: dict) -> bytes:
    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer, index=False)
    return buffer.getvalue()


def _report(cfg) -> dict:
    """A report.json as als_job.run writes it (keys and types), for two customers and k=2."""
    return {
        "model": als_job.MODEL_NAME,
        "config": {k: v for k, v in als_job.asdict(cfg).items() if k != "dynamodb_endpoint_url"},
        "k": cfg.k,
        "feedback": cfg.feedback,
        "period": {"first": "2026-01-01T00:00:00Z", "last": "2026-03-01T00:00:00Z"},
        "counts": {"lines_in": 10, "lines_used": 9, "left_out_cancellation": 1, "customers": 2, "items": 3,
                   "serving_customers": 2, "serving_rows": 4, "published": 3},
        "search": [],
        "best_params": {"rank": 8, "reg_param": 0.1, "alpha": 2.0},
        "metrics": {"map@2": 0.5, "precision@2": 0.25},
        "timings": {"total_seconds": 1.0},
        "generated_at": "2026-03-01T00:00:00Z",
    }  # fmt: skip


def _run_like_the_cluster(recorder, cluster_id: str, cfg) -> None:
    """What the step does on the cluster, as far as AWS is concerned: its boto3 calls as the emr-ec2 role and its
    outputs (written by Spark through EMRFS on a real cluster), then the step's state."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.emr.models import emr_backends

    s3 = config.client("s3")
    bucket, _, prefix = cfg.output.split("://", 1)[1].partition("/")
    outputs = {
        "split/train/part-0.parquet": _parquet({"customer_id": ["c1", "c2"], "stock_code": ["a", "b"],
                                                "strength": [1.0, 2.0]}),
        "split/test/part-0.parquet": _parquet({"customer_id": ["c1"], "stock_code": ["b"]}),
        "split/_SUCCESS": b"",
        "eval_recommendations/part-0.parquet": _parquet({"customer_id": ["c1", "c1"], "rank": [1, 2],
                                                         "stock_code": ["b", "c"], "score": [0.9, 0.5]}),
    }  # fmt: skip
    for key, body in outputs.items():
        s3.put_object(Bucket=bucket, Key=prefix + key, Body=body)
    with recorder.as_role("emr-ec2"):  # the job's own boto3 calls on the cluster
        items = [
            {"customer_id": c, "model": als_job.MODEL_NAME, "items": []} for c in ("c1", "c2", als_job.POPULAR_KEY)
        ]
        als_job.write_dynamodb(items, cfg.dynamodb_table, region=cfg.region)
        als_job.write_text(als_job._join(cfg.output, "report.json"), json.dumps(_report(cfg)), cfg.region)
    backend = emr_backends[DEFAULT_ACCOUNT_ID][config.settings().region]
    backend.clusters[cluster_id].steps[0].state = "COMPLETED"


def test_train_on_aws_runs_the_step_and_reads_the_report_back(buckets):
    from shoplake import recommend
    from shoplake.recommend import baselines

    config.client("dynamodb").create_table(
        TableName=config.resource_name("recommendations"),
        KeySchema=[{"AttributeName": "customer_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "customer_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    assert type(recommend.open_trainer()).__name__ == "EmrTrainer"  # chosen by the target, not by the caller
    result: dict = {}

    def notebook():
        try:
            result["report"] = recommend.train(cluster_id=None, k=2, holdout_weeks=2, poll_s=0.05, timeout_s=30)
        except Exception as exc:  # surfaced below
            result["error"] = exc

    caller = threading.Thread(target=notebook)
    caller.start()
    deadline = time.monotonic() + 20
    while not _calls(buckets, "DescribeStep") and time.monotonic() < deadline:  # submitted, now waiting
        time.sleep(0.02)
    (request,) = _calls(buckets, "RunJobFlow")
    cfg = als_job.parse_args(_job_arguments(request["Steps"][0]["HadoopJarStep"]["Args"]))
    cluster_id = config.client("emr").list_clusters()["Clusters"][0]["Id"]
    _run_like_the_cluster(buckets, cluster_id, cfg)
    caller.join(timeout=30)
    assert "error" not in result, result.get("error")
    report = result["report"]

    # the local report's shape: the job's report plus output (a local folder with the split), lake, backend
    assert set(report) == set(_report(cfg)) | {"output", "lake", "backend"}
    assert report["metrics"] == _report(cfg)["metrics"]
    assert report["lake"] == {"path": cfg.recommendations_output, "rows": 4, "customers": 2}
    assert report["backend"]["kind"] == "emr" and report["backend"]["cluster_id"] == cluster_id
    assert Path(report["output"]) == recommend.run_dir()
    split = baselines.read_split(report["output"])  # what compare_models reads, as after a local run
    assert split.relevant == {"c1": {"b"}} and len(split.spark_recommendations) == 2
    glue = config.client("glue").get_table(DatabaseName=config.glue_database(), Name="recommendations")["Table"]
    assert glue["StorageDescriptor"]["Location"].rstrip("/") == cfg.recommendations_output.rstrip("/")
    assert {c["Name"]: c["Type"] for c in glue["StorageDescriptor"]["Columns"]} == emr.SERVING_COLUMNS
    assert "elasticmapreduce:DescribeStep" in buckets.operations()


def _granted(statements: list[dict], action: str, resource: str) -> bool:
    return any(
        action in s["Action"] and any(fnmatch.fnmatchcase(resource, pattern) for pattern in s["Resource"])
        for s in statements
    )


def test_the_emr_ec2_role_grants_the_jobs_calls(buckets):
    """Each boto3 call the job makes on the cluster is allowed by the emr-ec2 policy of infra/resources.yaml."""
    from shoplake import infra

    cfg = emr.job_config()
    cluster_id = emr.submit(cfg)["cluster_id"]
    buckets.clear()
    config.client("dynamodb").create_table(
        TableName=cfg.dynamodb_table,
        KeySchema=[{"AttributeName": "customer_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "customer_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    _run_like_the_cluster(buckets, cluster_id, cfg)
    calls = [c for c in buckets.calls if c.role == "emr-ec2"]
    assert {c.action for c in calls} == {"dynamodb:BatchWriteItem", "s3:PutObject"}

    role = infra.find("iam_role", emr.EC2_ROLE, target="aws")
    assert role.props["instance_profile"] is True and role.props["service"] == "ec2.amazonaws.com"
    statements = infra.IamRole().policy_document(role)["Statement"]
    account = config.client("sts").get_caller_identity()["Account"]
    for call in calls:
        if call.service == "s3":
            resource = f"arn:aws:s3:::{call.params['Bucket']}/{call.params['Key']}"
        else:
            names = call.params["RequestItems"]
            resource = f"arn:aws:dynamodb:{cfg.region}:{account}:table/{next(iter(names))}"
        assert _granted(statements, call.action, resource), (call.action, resource)
    # EMRFS (not boto3) reads the lake and writes the serving lists; the log pusher writes the logs
    lake_bucket = cfg.input.split("/")[2]
    assert _granted(statements, "s3:GetObject", f"arn:aws:s3:::{lake_bucket}/curated/order_lines/x.parquet")
    assert _granted(statements, "s3:PutObject", f"arn:aws:s3:::{lake_bucket}/curated/recommendations/x.parquet")
    assert _granted(statements, "s3:PutObject", f"arn:aws:s3:::{emr.artifacts_bucket()}/emr/logs/{cluster_id}/x")
    assert not _granted(statements, "s3:PutObject", f"arn:aws:s3:::{lake_bucket}/curated/order_lines/x.parquet")

    service = infra.find("iam_role", emr.SERVICE_ROLE, target="aws")
    assert service.props["service"] == "elasticmapreduce.amazonaws.com"
    assert service.props["managed_policies"] == ["arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"]
    passes = infra.IamRole().policy_document(service)["Statement"]
    assert _granted(passes, "iam:PassRole", f"arn:aws:iam::{account}:role/{emr.role_name(emr.EC2_ROLE)}")
