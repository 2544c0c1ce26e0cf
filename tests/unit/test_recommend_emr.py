"""The EMR submission of the ALS job: request shapes checked against the emulator's EMR API."""

from __future__ import annotations

import pytest

from shoplake import config
from shoplake.recommend import als_job, emr

SCRIPT_PREFIX = "s3://{bucket}/emr/recommend/"


@pytest.fixture(scope="module")
def buckets(local_stack):
    """Only what the EMR submission touches: the artifacts and lake buckets (of this session's prefix)."""
    from shoplake import infra

    infra.apply([r for r in infra.load_spec() if r.type == "s3_bucket"])


def _job_arguments(args: list[str]) -> list[str]:
    """The arguments after the script in a ``spark-submit`` command line."""
    script = next(i for i, a in enumerate(args) if a.endswith("/als_job.py"))
    return args[script + 1 :]


def test_transient_cluster_runs_the_uploaded_script(buckets):
    cfg = emr.job_config(k=7, holdout_weeks=3)
    submitted = emr.submit(cfg, core_instances=3)
    client = config.client("emr")
    cluster = client.describe_cluster(ClusterId=submitted["cluster_id"])["Cluster"]
    assert cluster["ReleaseLabel"] == emr.RELEASE_LABEL
    assert [a["Name"] for a in cluster["Applications"]] == ["Spark"]
    assert cluster["AutoTerminate"] is True
    assert {t["Key"]: t["Value"] for t in cluster["Tags"]}["prefix"] == config.settings().prefix
    groups = client.list_instance_groups(ClusterId=submitted["cluster_id"])["InstanceGroups"]
    assert sorted((g["InstanceGroupType"], g["RequestedInstanceCount"]) for g in groups) == [("CORE", 3), ("MASTER", 1)]

    steps = client.list_steps(ClusterId=submitted["cluster_id"])["Steps"]
    assert [s["Id"] for s in steps] == [submitted["step_id"]]
    step = client.describe_step(ClusterId=submitted["cluster_id"], StepId=submitted["step_id"])["Step"]
    assert step["Name"] == emr.STEP_NAME
    assert step["Config"]["Jar"] == "command-runner.jar"
    args = step["Config"]["Args"]
    bucket = config.resource_name("artifacts")
    assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    assert args[args.index("--py-files") + 1] == SCRIPT_PREFIX.format(bucket=bucket) + "evaluate.py"
    # the arguments the cluster will pass are exactly the job's configuration, lake paths and table included
    parsed = als_job.parse_args(_job_arguments(args))
    assert parsed == cfg
    lake = config.resource_name("lake")
    assert parsed.input == f"s3://{lake}/curated/order_lines/"
    assert parsed.recommendations_output == f"s3://{lake}/curated/recommendations/"
    assert parsed.dynamodb_table == config.resource_name("recommendations")
    assert (parsed.k, parsed.holdout_weeks) == (7, 3)
    assert emr.step_state(submitted["cluster_id"], submitted["step_id"]) in {"PENDING", "RUNNING", "COMPLETED"}

    # the uploaded script is byte-for-byte the local one
    body = config.client("s3").get_object(Bucket=bucket, Key="emr/recommend/als_job.py")["Body"].read()
    assert body == (emr.HERE / "als_job.py").read_bytes()


def test_step_on_a_running_cluster(buckets):
    client = config.client("emr")
    running = client.run_job_flow(
        Name="shared-cluster",
        ReleaseLabel=emr.RELEASE_LABEL,
        Applications=[{"Name": "Spark"}],
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "SlaveInstanceType": "m5.xlarge",
            "InstanceCount": 2,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]
    submitted = emr.submit(emr.job_config(search=False), cluster_id=running)
    assert submitted["cluster_id"] == running
    steps = client.list_steps(ClusterId=running)["Steps"]
    assert submitted["step_id"] in [s["Id"] for s in steps]
    step = client.describe_step(ClusterId=running, StepId=submitted["step_id"])["Step"]
    assert "--no-search" in step["Config"]["Args"]


def test_bad_cluster_id_is_a_clear_error(buckets):
    with pytest.raises(emr.EmrError, match="cluster id"):
        emr.submit(emr.job_config(), cluster_id="j-DOESNOTEXIST")
