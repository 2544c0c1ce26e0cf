"""The CloudFormation template rendered from infra/stack.yaml: cfn-lint clean, same resources as the reconciler."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from shoplake import cloudformation as cf
from shoplake import infra
from shoplake.errors import InfraError

pytestmark = pytest.mark.aws

LAYER = "arn:aws:lambda:eu-west-1:123456789012:layer:shoplake-rate-detector-deps:3"


@pytest.fixture(scope="module")
def rendered() -> cf.Rendered:
    return cf.render()


def test_rendered_template_passes_cfn_lint(rendered):
    findings = cf.lint(rendered.template)
    assert [f"{m.rule.id} {m.message}" for m in findings] == []


def test_cfn_lint_catches_a_seeded_mistake(rendered):
    """The lint test can fail: a wrong type and a retired runtime are reported."""
    broken = copy.deepcopy(rendered.template)
    broken["Resources"]["StreamOrders"]["Properties"]["ShardCount"] = "two"
    broken["Resources"]["FunctionOrderHistory"]["Properties"]["Runtime"] = "python2.7"
    assert {m.rule.id for m in cf.lint(broken)} >= {"E3012", "E2533"}


def test_template_text_has_no_anchors_or_short_form_tags(rendered):
    body = rendered.body()
    assert not re.search(r"[&*]id\d+", body)
    assert not re.search(r"(^|\s)!\w", body)  # long-form intrinsic functions only
    assert yaml.safe_load(body) == rendered.template


def test_parameters_and_their_constraints(rendered):
    params = rendered.template["Parameters"]
    assert set(params) == {"Prefix", "CodeBucket", "AlarmPhone", "AlarmEmail", "RateDetectorLayerArn"}
    prefix = re.compile(params["Prefix"]["AllowedPattern"])
    assert prefix.match("dev") and prefix.match("team-a1")
    assert not prefix.match("Dev") and not prefix.match("a_b") and not prefix.match("-a") and not prefix.match("a-")
    layer = re.compile(params["RateDetectorLayerArn"]["AllowedPattern"])
    assert layer.match(LAYER) and not layer.match("") and not layer.match("${SHOPLAKE_RATE_DETECTOR_LAYER}")
    assert re.match(params["AlarmPhone"]["AllowedPattern"], "") and re.match(
        params["AlarmPhone"]["AllowedPattern"], "+447700900123"
    )
    assert not re.match(params["AlarmPhone"]["AllowedPattern"], "0044 7700")
    rule = rendered.template["Rules"]["AlarmEndpoint"]["Assertions"][0]["Assert"]
    assert "Fn::Or" in rule  # a stack with neither phone nor e-mail is refused before anything is created


def test_every_aws_resource_of_stack_yaml_is_rendered(rendered):
    spec = infra.load_spec(target="aws", expand=False)
    origins = set(rendered.resources.values())
    for r in spec:
        assert (r.type, r.name) in origins, r.key
        body = rendered.template["Resources"][cf.logical_id(r.type, r.name)]
        assert body["Type"] == cf.CFN_TYPES[r.type]
    # every Lambda package the template refers to is in the rendered set, under a content-hash key
    keys = {
        body["Properties"]["Code"]["S3Key"]
        for body in rendered.template["Resources"].values()
        if body["Type"] == "AWS::Lambda::Function"
    }
    assert keys == set(rendered.packages) and len(keys) == sum(r.type == "lambda_function" for r in spec)


def test_firehose_to_opensearch_waits_for_the_domain_and_buffers_briefly(rendered):
    dest = rendered.template["Resources"]["FirehoseWeblogs"]["Properties"][
        "AmazonopensearchserviceDestinationConfiguration"
    ]
    assert dest["DomainARN"] == {"Fn::GetAtt": ["DomainLogs", "Arn"]}  # the stream is created after the domain
    assert dest["BufferingHints"]["IntervalInSeconds"] <= 60 and dest["BufferingHints"]["SizeInMBs"] <= 5
    processor = dest["ProcessingConfiguration"]["Processors"][0]["Parameters"][0]
    assert processor["ParameterValue"] == {"Fn::GetAtt": ["FunctionWeblogsTransform", "Arn"]}


def test_unknown_environment_variable_cannot_become_part_of_the_template(tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text("resources:\n  - type: sns_topic\n    name: t\n    sms_subscription: ${SOMETHING_ELSE}\n")
    with pytest.raises(InfraError, match="no template parameter"):
        cf.render(infra.load_spec(path, target="aws", expand=False))
