"""infra on the aws target: CloudFormation plan (change set + cost), apply on moto, outputs, destroy leaves nothing."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from click.testing import CliRunner

from shoplake import cloudformation as cf
from shoplake import config, infra
from shoplake.errors import InfraError

pytestmark = pytest.mark.aws

LAYER = "arn:aws:lambda:eu-west-1:123456789012:layer:shoplake-rate-detector-deps:3"
ACCOUNT = "123456789012"


@pytest.fixture
def deployable(aws_target, monkeypatch):
    """aws_target with what a deploy needs: a layer ARN and a real-looking alarm endpoint."""
    monkeypatch.setenv("SHOPLAKE_RATE_DETECTOR_LAYER", LAYER)
    monkeypatch.setenv("SHOPLAKE_ALARM_EMAIL", "alarms@example.com")
    monkeypatch.delenv("SHOPLAKE_ALARM_PHONE", raising=False)
    monkeypatch.setenv("SHOPLAKE_PREFIX", "ci")
    return aws_target


def _stack(**kw) -> cf.CloudFormationStack:
    return cf.CloudFormationStack(poll_seconds=0, **kw)


# ---------------------------------------------------------------------------- plan-time checks (issue 11 #2, #11)


def test_missing_layer_is_a_plan_time_message_and_nothing_is_created(deployable, monkeypatch):
    monkeypatch.delenv("SHOPLAKE_RATE_DETECTOR_LAYER")
    with pytest.raises(InfraError, match="shoplake infra build-layer --publish"):
        infra.plan()
    with pytest.raises(InfraError, match="SHOPLAKE_RATE_DETECTOR_LAYER"):
        infra.apply()
    assert cf.list_prefix_resources("ci") == []
    assert not any(c.operation.startswith("Create") for c in deployable.calls)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SHOPLAKE_ALARM_PHONE .*or SHOPLAKE_ALARM_EMAIL"),
        ({"SHOPLAKE_ALARM_PHONE": cf.FICTIONAL_PHONE}, "fictional number"),
        ({"SHOPLAKE_ALARM_PHONE": "07700 900123"}, "not an E.164 number"),
    ],
)
def test_alarm_endpoint_must_be_real_on_aws(deployable, monkeypatch, env, message):
    monkeypatch.delenv("SHOPLAKE_ALARM_EMAIL")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(InfraError, match=message):
        infra.plan()


def test_upper_case_or_long_prefix_is_refused(deployable, monkeypatch):
    from shoplake.errors import ShoplakeError

    monkeypatch.setenv("SHOPLAKE_PREFIX", "Dev")
    with pytest.raises(ShoplakeError, match="lower-case"):  # config refuses it before any plan
        infra.plan()
    monkeypatch.setenv("SHOPLAKE_PREFIX", "a-very-long-prefix1")
    with pytest.raises(ShoplakeError, match="lower-case"):
        infra.physical_name(infra.find("s3_bucket", "lake"))


def test_bucket_names_carry_account_and_region(deployable):
    name = infra.physical_name(infra.find("s3_bucket", "lake"))
    assert name == f"shoplake-ci-lake-{ACCOUNT}-eu-west-1"
    assert infra.arn("bucket", "lake/raw/*") == f"arn:aws:s3:::{name}/raw/*"
    from shoplake import lake

    assert lake.bucket() == name


# ---------------------------------------------------------------------------- plan: change set rows + cost


def test_plan_lists_every_change_with_replacement_and_cost_and_leaves_no_stack(deployable):
    rows = infra.plan()
    rendered = cf.render()
    assert {c.logical_id for c in rows} == set(rendered.template["Resources"])
    assert {c.action for c in rows} == {"create"}
    assert all(c.replacement for c in rows)
    by_type = {c.resource.type: c for c in rows}
    assert by_type["opensearch_domain"].hourly_usd > 0 and by_type["kinesis_stream"].hourly_usd > 0
    assert by_type["dynamodb_table"].hourly_usd == 0.0
    table = infra.table(rows)
    assert {"replacement", "hourly_usd", "monthly_usd"} <= set(table.columns)
    summary = infra.cost_summary(rows)
    assert summary[0].startswith("estimated cost of the stack: $") and "EMR" in summary[1] and "Redshift" in summary[2]
    # a plan changes nothing: the CREATE change set and its empty stack are removed again, no bucket is made
    assert cf.list_prefix_resources("ci") == []
    assert config.client("s3").list_buckets()["Buckets"] == []
    ops = deployable.operations()
    assert {"cloudformation:CreateChangeSet", "cloudformation:DescribeChangeSet"} <= ops
    assert "cloudformation:ExecuteChangeSet" not in ops


def test_plan_cost_comes_from_the_price_table(deployable):
    prices = cf.prices()
    domain = infra.find("opensearch_domain", "logs")
    expected = prices["stack"]["opensearch_domain"]["instance_hour"][domain.props["instance_type"]] * int(
        domain.props["instance_count"]
    )
    assert cf.hourly_cost(domain, prices) >= expected
    stream = infra.find("kinesis_stream", "orders")
    assert cf.hourly_cost(stream, prices) == pytest.approx(
        prices["stack"]["kinesis_stream"]["shard_hour"] * stream.props["shards"]
    )
    assert prices["region"] and prices["checked"]


# ---------------------------------------------------------------------------- apply on moto, outputs, destroy


def _exists(cfn_type: str, physical: str) -> bool:
    """Whether a deployed resource really exists, asked of its own service (not of CloudFormation)."""
    c = config.client
    try:
        if cfn_type == "AWS::S3::Bucket":
            c("s3").head_bucket(Bucket=physical)
        elif cfn_type == "AWS::Kinesis::Stream":
            c("kinesis").describe_stream_summary(StreamName=physical)
        elif cfn_type == "AWS::DynamoDB::Table":
            c("dynamodb").describe_table(TableName=physical)
        elif cfn_type == "AWS::SQS::Queue":
            c("sqs").get_queue_attributes(QueueUrl=physical)
        elif cfn_type == "AWS::SNS::Topic":
            c("sns").get_topic_attributes(TopicArn=physical)
        elif cfn_type == "AWS::IAM::Role":
            c("iam").get_role(RoleName=physical)
        elif cfn_type == "AWS::IAM::InstanceProfile":
            c("iam").get_instance_profile(InstanceProfileName=physical)
        elif cfn_type == "AWS::Lambda::Function":
            c("lambda").get_function(FunctionName=physical)
        elif cfn_type == "AWS::Lambda::EventSourceMapping":
            c("lambda").get_event_source_mapping(UUID=physical)
        else:
            raise AssertionError(f"no existence check for {cfn_type}")
    except c("s3").exceptions.ClientError:
        return False
    return True


def test_apply_deploys_on_moto_every_type_it_supports_then_destroy_leaves_nothing(deployable):
    stack = _stack()
    rendered = cf.render()
    first = stack.apply()
    assert {c.action for c in first} == {"create"} and len(first) == len(rendered.template["Resources"])
    assert stack.status() == "CREATE_COMPLETE"
    # the code went to the bootstrap bucket under content-hash keys
    keys = {o["Key"] for o in config.client("s3").list_objects_v2(Bucket=cf.bootstrap_bucket())["Contents"]}
    assert keys == set(rendered.packages)

    deployed = {s["LogicalResourceId"]: s for s in stack._stack_resources()}
    skipped, created = [], []
    for logical, body in rendered.template["Resources"].items():
        kind = body["Type"]
        if kind in cf.MOTO_SKIPPED_TYPES:  # moto 5.2.5 accepts these and creates nothing: listed, not asserted
            skipped.append(kind)
            continue
        physical = deployed[logical]["PhysicalResourceId"]
        assert deployed[logical]["ResourceType"] == kind, logical
        assert _exists(kind, physical), f"{logical} ({kind}) is missing although moto supports {kind}"
        created.append(kind)
    assert sorted(set(skipped)) == sorted(cf.MOTO_SKIPPED_TYPES)
    assert {"AWS::Lambda::Function", "AWS::Lambda::EventSourceMapping", "AWS::IAM::InstanceProfile"} <= set(created)
    fn = config.client("lambda").get_function_configuration(FunctionName="shoplake-ci-order-history")
    assert fn["Environment"]["Variables"]["TABLE_NAME"] == "shoplake-ci-order_history"
    assert fn["Runtime"] == "python3.12" and fn["Timeout"] == 60

    second = stack.apply()
    assert {c.action for c in second} == {"unchanged"}

    before = cf.list_prefix_resources("ci")
    assert len(before) >= len(created)
    config.client("s3").put_object(Bucket=f"shoplake-ci-lake-{ACCOUNT}-eu-west-1", Key="raw/x.json", Body=b"{}")
    with pytest.raises(InfraError, match="--confirm ci"):
        stack.destroy()
    removed = stack.destroy(confirm="ci")
    assert len(removed) == len(rendered.template["Resources"])
    # moto lists the resources it skipped without a logical id ("unknown" rows); AWS names them all
    supported = {r.type for r in infra.load_spec(target="aws") if cf.CFN_TYPES[r.type] not in cf.MOTO_SKIPPED_TYPES}
    assert {c.resource.type for c in removed} - {"unknown"} == supported
    assert stack.status() is None
    assert cf.list_prefix_resources("ci") == []
    assert infra.leftovers() == []
    # every service asked directly, independently of list_prefix_resources
    c = config.client
    assert not [b for b in c("s3").list_buckets()["Buckets"] if b["Name"].startswith("shoplake-ci-")]
    assert not c("kinesis").list_streams()["StreamNames"]
    assert not c("dynamodb").list_tables()["TableNames"]
    assert not c("sqs").list_queues().get("QueueUrls")
    assert not c("sns").list_topics()["Topics"]
    assert not [r for r in c("iam").list_roles()["Roles"] if r["RoleName"].startswith("shoplake-ci-")]
    assert not c("iam").list_instance_profiles()["InstanceProfiles"]
    assert not c("lambda").list_functions()["Functions"]
    assert not c("lambda").list_event_source_mappings()["EventSourceMappings"]
    assert not c("firehose").list_delivery_streams()["DeliveryStreamNames"]
    assert not c("opensearch").list_domain_names()["DomainNames"]
    assert not c("glue").get_databases()["DatabaseList"]


def test_outputs_are_read_from_the_stack(deployable):
    """moto computes Outputs only when every output's resource is supported (and only in create_stack): deploy
    those, compare with the names the reconciler computes from resources.yaml."""
    spec = [r for r in infra.load_spec(target="aws", expand=False) if cf.CFN_TYPES[r.type] not in cf.MOTO_SKIPPED_TYPES]
    spec = [r if r.type != "sns_topic" else infra.Resource(r.type, r.name, {}) for r in spec]
    stack = _stack(spec=spec)
    with pytest.raises(InfraError, match="does not exist.*infra apply"):
        stack.outputs()
    # moto's execute_change_set leaves Outputs empty; its create_stack computes them: deploy the same template so
    rendered = cf.render(spec)
    stack.package(rendered)
    config.client("cloudformation").create_stack(
        StackName=stack.name,
        TemplateBody=cf.to_yaml(rendered.template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in stack.preflight(rendered).items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    out = stack.outputs()
    expected = infra.Reconciler().outputs(infra.load_spec())
    common = set(out) & set(expected)
    assert {
        "bucket:lake",
        "bucket:artifacts",
        "table:order_history",
        "queue_url:alarm-inbox",
        "topic_arn:alarms",
    } <= common
    assert {k: out[k] for k in common} == {k: expected[k] for k in common}
    assert out["role_arn:emr-ec2"].endswith("role/shoplake-ci-emr-ec2")
    assert out["instance_profile:emr-ec2"] == "shoplake-ci-emr-ec2"
    stack.destroy(confirm="ci")


def test_failure_message_picks_the_first_failed_event(deployable, monkeypatch):
    import datetime as dt

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    events = [  # newest first, as describe_stack_events lists them
        {"EventId": "4", "Timestamp": t0, "ResourceType": "AWS::CloudFormation::Stack", "LogicalResourceId": "s",
         "ResourceStatus": "ROLLBACK_COMPLETE"},
        {"EventId": "3", "Timestamp": t0, "ResourceType": "AWS::Lambda::Function", "LogicalResourceId": "FunctionB",
         "ResourceStatus": "CREATE_FAILED", "ResourceStatusReason": "Resource creation cancelled"},
        {"EventId": "2", "Timestamp": t0, "ResourceType": "AWS::KinesisFirehose::DeliveryStream",
         "LogicalResourceId": "FirehoseWeblogs", "ResourceStatus": "CREATE_FAILED",
         "ResourceStatusReason": "Domain is still being processed"},
        {"EventId": "1", "Timestamp": t0, "ResourceType": "AWS::S3::Bucket", "LogicalResourceId": "BucketLake",
         "ResourceStatus": "CREATE_COMPLETE"},
    ]  # fmt: skip
    stack = _stack()
    monkeypatch.setattr(cf.CloudFormationStack, "_events", lambda self, since: events)
    message = stack._failure("ROLLBACK_COMPLETE", 0)
    assert "FirehoseWeblogs (AWS::KinesisFirehose::DeliveryStream): Domain is still being processed" in message
    assert "rolled back" in message


def test_apply_right_after_destroy_waits_out_sqs_queue_name_reuse(deployable, monkeypatch):
    """A queue re-created within 60 s of its deletion fails with QueueDeletedRecently: apply waits first."""
    stack = _stack()
    now = [1_000_000.0]
    waits: list[float] = []
    monkeypatch.setattr(cf, "_now", lambda: now[0])
    monkeypatch.setattr(cf.time, "sleep", lambda s: waits.append(s))
    stack._state_path().write_text(json.dumps({"deleted_at": now[0] - 20}))
    stack._wait_for_queue_names()
    assert waits and waits[0] == pytest.approx(cf.QUEUE_RECREATE_SECONDS - 20)
    waits.clear()
    now[0] += 100
    stack._wait_for_queue_names()
    assert waits == []


def test_drift_on_an_emulator_says_it_is_unavailable(deployable):
    stack = _stack()
    with pytest.raises(InfraError, match="drift detection is not available"):
        stack.drift()


def test_describe_target_names_account_region_and_stack(deployable):
    lines = infra.describe_target()
    assert any(ACCOUNT in line and "eu-west-1" in line for line in lines)
    assert any("shoplake-ci: not deployed" in line for line in lines)


# ---------------------------------------------------------------------------- the index template (post-deploy step)


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_PUT(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Recorder.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"acknowledged": true}')

    def log_message(self, *args):
        pass


def test_index_template_is_put_sigv4_signed(aws_target):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.requests.clear()
    try:
        path = config.REPO_ROOT / "infra" / "opensearch" / "weblogs-template.json"
        cf.install_index_template("127.0.0.1", path, "weblogs", port=server.server_port, use_ssl=False)
    finally:
        server.shutdown()
    [request] = _Recorder.requests
    assert request["path"] == "/_index_template/weblogs"
    assert request["body"] == json.loads(path.read_text())
    auth = request["headers"]["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256") and "/eu-west-1/es/aws4_request" in auth


def test_stack_yaml_names_the_index_template_file():
    weblogs = infra.find("firehose_delivery_stream", "weblogs", target="aws")
    assert (config.REPO_ROOT / "infra" / weblogs.props["opensearch"]["index_template"]).is_file()


# ---------------------------------------------------------------------------- CLI


def test_template_command_writes_template_and_zips(tmp_path):
    out = tmp_path / "t" / "shoplake.cfn.yaml"
    result = CliRunner().invoke(infra.cli, ["template", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and cf.lint(out.read_text()) == []
    assert {p.name for p in (out.parent / "lambda").iterdir()} == {k.rsplit("/", 1)[1] for k in cf.render().packages}


# ---------------------------------------------------------------------------- notebooks 00 and 99 on aws


def _run_notebook(name: str, params: dict, ns: dict) -> None:
    """Execute a notebook's code cells in this process (moto answers), parameters overridden as papermill would."""
    import nbformat

    nb = nbformat.read(config.REPO_ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        exec(compile(cell.source, f"{name}.ipynb", "exec"), ns)  # noqa: S102 (our own notebook)
        if "parameters" in cell.metadata.get("tags", []):
            ns.update(params)


def test_notebooks_00_and_99_on_aws_go_through_cloudformation(deployable, tmp_path, monkeypatch):
    import plotly.io as pio

    monkeypatch.setattr(pio.renderers, "default", "json")
    monkeypatch.setattr(cf, "POLL_SECONDS", 0)  # moto settles at once
    params = {"target": "aws", "scale": "tiny", "out_dir": str(tmp_path)}
    _run_notebook("00_provision", params, {})
    provision = json.loads((tmp_path / "00_provision.metrics.json").read_text())["metrics"]
    assert provision["target"] == "aws" and provision["second_apply_changes"] == 0
    assert provision["created"] == len(cf.render().template["Resources"])
    ops = deployable.operations()
    assert {"cloudformation:CreateChangeSet", "cloudformation:ExecuteChangeSet"} <= ops
    assert not {"kinesis:CreateStream", "dynamodb:CreateTable", "lambda:CreateFunction"} & ops  # no reconciler
    _run_notebook("99_teardown", params | {"confirm_destroy": "ci"}, {})
    teardown = json.loads((tmp_path / "99_teardown.metrics.json").read_text())["metrics"]
    assert teardown == {"deleted": provision["created"], "still_present": 0}
    assert "cloudformation:DeleteStack" in deployable.operations()


def test_destroy_removes_a_bucket_that_received_a_late_firehose_flush(deployable, monkeypatch):
    """Firehose may still flush after the buckets were emptied: destroy still leaves no bucket behind."""
    stack = _stack()
    stack.apply()
    lake = f"shoplake-ci-lake-{ACCOUNT}-eu-west-1"
    real_empty, flushed = cf.empty_bucket, []

    def empty_then_flush(bucket: str) -> int:
        n = real_empty(bucket)
        if bucket == lake and not flushed:  # the delivery stream's last buffer lands after the emptying
            config.client("s3").put_object(Bucket=lake, Key="raw/orders/late.json", Body=b"{}")
            flushed.append(bucket)
        return n

    monkeypatch.setattr(cf, "empty_bucket", empty_then_flush)
    stack.destroy(confirm="ci")
    assert flushed and cf.list_prefix_resources("ci") == []


def test_reconciler_waits_for_a_code_update_before_updating_the_configuration(deployable, monkeypatch):
    """Lambda refuses UpdateFunctionConfiguration while UpdateFunctionCode is in progress (ResourceConflictException):
    the reconciler waits for LastUpdateStatus between the two."""
    spec = [infra.find("iam_role", "weblogs-transform-fn"), infra.find("lambda_function", "weblogs-transform")]
    infra.apply(spec)
    fn = spec[1]
    changed = infra.Resource(fn.type, fn.name, {**fn.props, "timeout": 90, "source": "lambdas/rate_alarm.py"})
    deployable.clear()
    [change] = infra.plan([changed])
    assert change.action == "update" and "code changed" in change.detail and "timeout changed" in change.detail
    infra.apply([changed])
    ops = [c.operation for c in deployable.calls if c.service == "lambda"]
    code, config_ = ops.index("UpdateFunctionCode"), ops.index("UpdateFunctionConfiguration")
    assert code < config_ and "GetFunction" in ops[code:config_]  # the function_updated_v2 waiter polls GetFunction


def test_cli_plan_prints_changes_replacements_and_cost(deployable):
    result = CliRunner().invoke(infra.cli, ["plan"])
    assert result.exit_code == 0, result.output
    assert "create     opensearch_domain" in result.output and "/h)" in result.output
    assert "estimated cost of the stack: $" in result.output and "checked" in result.output


def test_cli_plan_without_layer_fails_with_the_fix(deployable, monkeypatch):
    monkeypatch.delenv("SHOPLAKE_RATE_DETECTOR_LAYER")
    result = CliRunner().invoke(infra.cli, ["plan"])
    assert isinstance(result.exception, InfraError) and "build-layer --publish" in str(result.exception)


def test_cli_build_layer_uses_the_layer_builder(tmp_path, monkeypatch):
    from shoplake import layers

    built = tmp_path / "layer.zip"

    def build(out_dir):
        assert out_dir == tmp_path
        built.write_bytes(b"zip")
        return built

    monkeypatch.setattr(layers, "build_rate_detector_layer", build)
    result = CliRunner().invoke(infra.cli, ["build-layer", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"built {built}" in result.output
