"""infra: plan/apply/destroy of infra/resources.yaml against the real emulator."""

import json
import uuid

import pytest

from shoplake import config, infra
from shoplake.errors import InfraError


@pytest.fixture()
def own_prefix(monkeypatch, local_stack):
    """A prefix of this test alone, so apply/destroy see only their own resources."""
    monkeypatch.setenv("SHOPLAKE_PREFIX", "i" + uuid.uuid4().hex[:6])
    config.clear_caches()
    yield config.settings().prefix
    infra.destroy()
    config.clear_caches()


def test_apply_is_idempotent_and_destroy_removes_everything(own_prefix):
    spec = infra.load_spec()
    assert {c.action for c in infra.plan(spec)} == {"create"}
    first = infra.apply(spec)
    assert len(first) == len(spec)
    second = infra.apply(spec)
    assert [c.action for c in second] == ["unchanged"] * len(spec)
    # the resources really exist in the emulator, with the configured shape
    kinesis = config.client("kinesis").describe_stream_summary(StreamName=config.resource_name("orders"))
    assert (
        kinesis["StreamDescriptionSummary"]["OpenShardCount"] == infra.find("kinesis_stream", "orders").props["shards"]
    )
    table = config.client("dynamodb").describe_table(TableName=config.resource_name("order_history"))["Table"]
    assert {k["AttributeName"] for k in table["KeySchema"]} == {"customer_id", "order_key"}
    fn = config.client("lambda").get_function_configuration(FunctionName=config.resource_name("order-history"))
    assert fn["Environment"]["Variables"]["TABLE_NAME"] == config.resource_name("order_history")
    assert fn["Environment"]["Variables"]["DEAD_LETTER_QUEUE_URL"].startswith(config.endpoint_url())
    # the emulator's own view still works with Lambda functions defined (patched in shoplake._moto_patches)
    from shoplake import local_services

    assert "awslambda" in local_services.emulator_data()
    removed = infra.destroy(spec=spec)
    assert [c.action for c in removed] == ["delete"] * len(spec)
    assert {c.action for c in infra.plan(spec)} == {"create"}


def test_destroy_leaves_resources_it_did_not_create(own_prefix):
    s3 = config.client("s3")
    foreign = config.resource_name("lake")
    s3.create_bucket(Bucket=foreign)  # made by someone else before apply
    spec = [r for r in infra.load_spec() if r.type in ("s3_bucket", "kinesis_stream")]
    changes = {c.resource.name: c.action for c in infra.apply(spec)}
    assert changes["lake"] == "unchanged" and changes["orders"] == "create"
    infra.destroy(spec=spec)
    assert foreign in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.delete_bucket(Bucket=foreign)


def test_drift_is_planned_and_fixed(own_prefix):
    stream = infra.find("kinesis_stream", "orders")
    infra.apply([stream])
    wider = infra.Resource(stream.type, stream.name, {**stream.props, "shards": stream.props["shards"] + 2})
    [change] = infra.plan([wider])
    assert change.action == "update" and "shards" in change.detail
    infra.apply([wider])
    assert [c.action for c in infra.plan([wider])] == ["unchanged"]


def test_least_privilege_policy_names_only_the_stack_resources(own_prefix):
    role = infra.find("iam_role", "order-history-fn")
    doc = infra.HANDLERS["iam_role"].policy_document(role)
    resources = {arn for st in doc["Statement"] for arn in st["Resource"]}
    assert all("*" not in arn or arn.startswith("arn:aws:logs:") for arn in resources), resources
    assert any(arn.endswith(f"table/{config.resource_name('order_history')}") for arn in resources)
    json.dumps(doc)


def test_aws_destroy_needs_confirmation(monkeypatch):
    monkeypatch.setenv("SHOPLAKE_TARGET", "aws")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    with pytest.raises(InfraError, match="--confirm"):
        infra.destroy()


def test_bad_spec_gives_a_clear_error(tmp_path):
    bad = tmp_path / "resources.yaml"
    bad.write_text("resources:\n  - type: rocket\n    name: x\n")
    with pytest.raises(InfraError, match="unknown type 'rocket'"):
        infra.load_spec(bad)
    bad.write_text("resources:\n  - name: x\n")
    with pytest.raises(InfraError, match="needs a 'type'"):
        infra.load_spec(bad)


def test_aws_only_resources_and_overrides(monkeypatch):
    local = {r.key: r for r in infra.load_spec(target="local")}
    aws = {r.key: r for r in infra.load_spec(target="aws")}
    assert "opensearch_domain:logs" in aws and "opensearch_domain:logs" not in local
    assert "opensearch" in aws["firehose_delivery_stream:weblogs"].props
    assert "opensearch" not in local["firehose_delivery_stream:weblogs"].props


def test_opensearch_and_firehose_request_shapes_against_the_emulator(own_prefix):
    """aws-only resources still send well-formed requests: create them through the emulator's APIs."""
    domain = [r for r in infra.load_spec(target="aws") if r.type == "opensearch_domain"]
    handler = infra.HANDLERS["opensearch_domain"]
    handler.create(domain[0])
    assert handler.exists(domain[0]) is not None
    handler.delete(domain[0])


def test_lambda_zip_is_deterministic():
    a = infra.lambda_zip("errors.py")
    b = infra.lambda_zip("errors.py")
    assert a == b


def test_role_with_instance_profile_is_created_and_removed_with_it(own_prefix):
    """``instance_profile: true`` (the EMR nodes' role): a profile of the same name holds the role."""
    role = infra.find("iam_role", "emr-ec2", target="aws")
    assert role.props.get("instance_profile") is True
    iam, name = config.client("iam"), infra.physical_name(role)
    infra.apply([role])
    profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [name]
    assert infra.outputs([role])[f"instance_profile:{role.name}"] == name
    infra.destroy(spec=[role])
    assert name not in [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]]
    assert name not in [r["RoleName"] for r in iam.list_roles()["Roles"]]


def test_local_verbs_for_notebooks_00_and_99(own_prefix):
    """The target-neutral verbs the notebooks call: describe_target, leftovers, cost_summary (empty locally)."""
    assert infra.describe_target()  # the local services's status lines
    spec = [infra.find("sqs_queue", "alarm-inbox")]
    changes = infra.apply(spec)
    assert infra.cost_summary(changes) == []
    assert f"sqs_queue:{config.resource_name('alarm-inbox')}" in infra.leftovers()
    infra.destroy(spec=spec)
    assert f"sqs_queue:{config.resource_name('alarm-inbox')}" not in infra.leftovers()
