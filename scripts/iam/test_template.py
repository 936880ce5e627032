"""The template's policies as deployed: within IAM's quotas in the worst case, and rendered as CloudFormation would."""

import unittest
from pathlib import Path

from iam.template import Stack, load, role_policies

TEMPLATE = load(Path(__file__).resolve().parents[2] / "template.yaml")

# IAM user guide, "IAM and AWS STS quotas": characters without whitespace.
INLINE_PER_ROLE = 10_240
MANAGED_POLICY = 6_144
MANAGED_PER_ROLE = 10


def worst_case():
    """The longest stack ID (a 128-character name, as StackSets' `StackSet-<name>-<uuid>` can
    reach), five database security groups, and every optional parameter set."""
    name = "StackSet-" + "n" * (128 - len("StackSet-") - 37) + "-12345678-1234-1234-1234-123456789012"
    assert len(name) == 128
    stack_id = f"arn:aws-us-gov:cloudformation:us-gov-west-1:123456789012:stack/{name}/12345678-1234-1234-1234-123456789012"
    groups = [f"arn:aws-us-gov:ec2:us-gov-west-1:123456789012:security-group/sg-0123456789abcdef{i}" for i in range(5)]
    parameters = {
        "DatabaseIdentifier": "orders-cluster-with-a-long-name",
        "DatabasePort": "3306",
        "VpcId": "vpc-0123456789abcdef0",
        "SubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1,subnet-0123456789abcdef2",
        "SecurityGroupIds": "",
        "LoadBalancerClients": "10.0.0.0/8,sg-0123456789abcdef9",
        "AllowedPrincipals": "arn:aws:iam::210987654321:root",
        "ConsumerAvailabilityZoneIds": "usgw1-az1,usgw1-az2,usgw1-az3",
        "AcceptanceRequired": "true",
        "NamePrefix": "import",
        "SupportedRegions": "us-gov-east-1",
        "AllowDatabaseIngress": "true",
        "WaitForHealthyTarget": "true",
        "EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic": "on",
        "NotificationEmail": "dba@example.com",
        "SyncIntervalMinutes": "5",
        "ReportToEventBus": "arn:aws-us-gov:events:us-gov-east-1:210987654321:event-bus/" + "f" * 180,
    }
    attributes = {
        "DatabaseSecurityGroups.Arns": ",".join(groups),
        "DatabaseSecurityGroups.VpcArn": "arn:aws-us-gov:ec2:us-gov-west-1:123456789012:vpc/vpc-0123456789abcdef0",
    }
    return Stack(stack_id, parameters, attributes)


class Quotas(unittest.TestCase):
    def test_every_role_fits_iams_quotas_in_the_worst_case(self):
        roles = role_policies(TEMPLATE, worst_case())
        self.assertEqual(set(roles), {"FunctionRole", "FollowerRole"})
        for role, policies in roles.items():
            inline = sum(p.size() for p in policies if not p.managed)
            managed = [p for p in policies if p.managed]
            print(f"\n{role}: inline {inline} of {INLINE_PER_ROLE}; managed " + ", ".join(f"{p.where} {p.size()} of {MANAGED_POLICY}" for p in managed))
            self.assertLessEqual(inline, INLINE_PER_ROLE, role)
            self.assertLessEqual(len(managed), MANAGED_PER_ROLE, role)
            for policy in managed:
                self.assertLessEqual(policy.size(), MANAGED_POLICY, policy.where)

    def test_sizes_count_without_whitespace(self):
        policy = role_policies(TEMPLATE, worst_case())["FollowerRole"][0]
        self.assertNotIn(" ", str(policy.size()))
        self.assertEqual(policy.size(), len("".join(__import__("json").dumps(policy.document).split())))


class Rendering(unittest.TestCase):
    def test_the_deploy_time_policy_is_attached_once_the_lookup_answered(self):
        stack = worst_case()
        answered = [p.where for p in role_policies(TEMPLATE, stack)["FunctionRole"]]
        self.assertIn("DatabaseNetworkPolicy/database-network", answered)
        stack.attributes.clear()
        before = [p.where for p in role_policies(TEMPLATE, stack)["FunctionRole"]]
        self.assertNotIn("DatabaseNetworkPolicy/database-network", before)

    def test_conditions_refs_and_subs_resolve_for_the_stack(self):
        stack = worst_case()
        rendered = str([p.document for p in role_policies(TEMPLATE, stack)["FunctionRole"]])
        self.assertIn(stack.stack_id, rendered)
        self.assertIn(f"log-group:/aws/lambda/{stack.name}-reverse-privatelink:log-stream:*", rendered)
        self.assertIn("arn:aws-us-gov:elasticloadbalancing:us-gov-west-1:123456789012:targetgroup/*/*", rendered)
        self.assertNotIn("${", rendered)

    def test_both_roles_may_report_to_the_given_bus_only_and_only_when_one_is_given(self):
        stack = worst_case()
        bus = stack.parameters["ReportToEventBus"]
        for role, policies in role_policies(TEMPLATE, stack).items():
            granted = [
                s for p in policies for s in p.document["Statement"] if "events:PutEvents" in str(s.get("Action"))
            ]
            self.assertEqual([s["Resource"] for s in granted], [bus], role)
            self.assertEqual(granted[0]["Condition"]["StringEquals"]["events:source"], "reverse-privatelink", role)
        stack.parameters["ReportToEventBus"] = ""
        for role, policies in role_policies(TEMPLATE, stack).items():
            self.assertNotIn("events:", str([p.document for p in policies]), role)


if __name__ == "__main__":
    unittest.main()
