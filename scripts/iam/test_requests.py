"""Requests as the authorizations AWS makes: per resource, with that resource type's keys only."""

import unittest

from iam.policy import decide
from iam.requests import World, authorizations

ACCOUNT, REGION = "123456789012", "us-east-1"
STACK = "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1"
OWNER = "reverse-privatelink:stack-id"
TG = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg/1"


class FakeWorld(World):
    def __init__(self, ec2=None, elb=None, load_balancer_role=True):
        self.ec2, self.elb, self.role = ec2 or {}, elb or {}, load_balancer_role

    def ec2_tags(self, resource_id):
        return self.ec2.get(resource_id)

    def security_group_vpc(self, group_id):
        return "vpc-1"

    def elb_tags(self, arn):
        return self.elb.get(arn)

    def elb_arn(self, arn):
        return arn

    def has_load_balancer_role(self):
        return self.role


def statement(action, resource, condition=None):
    found = {"Effect": "Allow", "Action": action, "Resource": resource}
    if condition:
        found["Condition"] = condition
    return found


def refused(service, action, params, statements, world=None):
    """The authorizations of the request that the statements do not allow, as (action, resource)."""
    found = authorizations(service, action, params, world or FakeWorld(), REGION, ACCOUNT, {})
    policies = [("test", {"Statement": statements})]
    return [(a.action, a.resource) for a in found if not decide(policies, a).allowed]


class PerResource(unittest.TestCase):
    def test_a_request_tag_condition_never_allows_the_vpc_part_of_create_security_group(self):
        params = {
            "GroupName": "g",
            "VpcId": "vpc-1",
            "TagSpecification.1.ResourceType": "security-group",
            "TagSpecification.1.Tag.1.Key": OWNER,
            "TagSpecification.1.Tag.1.Value": STACK,
        }
        world = FakeWorld(ec2={"vpc-1": {}})
        on_create = statement("ec2:CreateTags", "*", {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}})
        both = statement(
            "ec2:CreateSecurityGroup",
            ["arn:aws:ec2:*:*:security-group/*", "arn:aws:ec2:*:*:vpc/*"],
            {"StringEquals": {f"aws:RequestTag/{OWNER}": STACK}},
        )
        self.assertEqual(
            refused("ec2", "CreateSecurityGroup", params, [both, on_create], world),
            [("ec2:CreateSecurityGroup", "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-1")],
            "aws:RequestTag is a key of the security-group resource type only",
        )
        vpc_apart = statement("ec2:CreateSecurityGroup", "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-1")
        self.assertEqual(refused("ec2", "CreateSecurityGroup", params, [both, vpc_apart, on_create], world), [])

    def test_a_resource_tag_of_another_stack_is_refused(self):
        mine = statement("elasticloadbalancing:RegisterTargets", "*", {"StringEquals": {f"aws:ResourceTag/{OWNER}": STACK}})
        reads = statement("ec2:Describe*", "*")
        params = {"TargetGroupArn": TG, "Targets.member.1.Id": "10.0.1.5"}
        theirs = FakeWorld(elb={TG: {OWNER: "arn:aws:cloudformation:us-east-1:123456789012:stack/other/2"}})
        self.assertEqual(refused("elasticloadbalancing", "RegisterTargets", params, [mine, reads], theirs), [("elasticloadbalancing:RegisterTargets", TG)])
        ours = FakeWorld(elb={TG: {OWNER: STACK}})
        self.assertEqual(refused("elasticloadbalancing", "RegisterTargets", params, [mine, reads], ours), [])

    def test_elb_calls_ec2_with_the_callers_permissions(self):
        register = statement("elasticloadbalancing:RegisterTargets", "*")
        params = {"TargetGroupArn": TG, "Targets.member.1.Id": "10.0.1.5"}
        world = FakeWorld(elb={TG: {}})
        missing = refused("elasticloadbalancing", "RegisterTargets", params, [register], world)
        self.assertEqual(
            sorted(action for action, _ in missing),
            ["ec2:DescribeInstances", "ec2:DescribeInternetGateways", "ec2:DescribeSubnets", "ec2:DescribeVpcs"],
        )

    def test_tagging_on_create_is_authorized_as_add_tags_with_the_create_action(self):
        create = statement("elasticloadbalancing:CreateTargetGroup", "*")
        reads = statement("ec2:Describe*", "*")
        params = {"Name": "tg", "Tags.member.1.Key": OWNER, "Tags.member.1.Value": STACK}
        self.assertEqual(
            refused("elasticloadbalancing", "CreateTargetGroup", params, [create, reads]),
            [("elasticloadbalancing:AddTags", "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg/*")],
        )
        on_create = statement("elasticloadbalancing:AddTags", "*", {"StringEquals": {"elasticloadbalancing:CreateAction": "CreateTargetGroup"}})
        self.assertEqual(refused("elasticloadbalancing", "CreateTargetGroup", params, [create, reads, on_create]), [])
        # A plain AddTags carries no CreateAction: the same statement does not allow it.
        plain = {"ResourceArns.member.1": TG, "Tags.member.1.Key": "k", "Tags.member.1.Value": "v"}
        self.assertEqual(
            refused("elasticloadbalancing", "AddTags", plain, [on_create], FakeWorld(elb={TG: {}})),
            [("elasticloadbalancing:AddTags", TG)],
        )

    def test_an_ec2_rule_resource_is_authorized_only_when_the_request_carries_tags(self):
        group = statement("ec2:AuthorizeSecurityGroupIngress", "arn:aws:ec2:us-east-1:123456789012:security-group/sg-1")
        world = FakeWorld(ec2={"sg-1": {}})
        plain = {"GroupId": "sg-1", "IpPermissions.1.IpProtocol": "tcp"}
        self.assertEqual(refused("ec2", "AuthorizeSecurityGroupIngress", plain, [group], world), [])
        tagged = {**plain, "TagSpecification.1.ResourceType": "security-group-rule", "TagSpecification.1.Tag.1.Key": "k", "TagSpecification.1.Tag.1.Value": "v"}
        self.assertEqual(
            refused("ec2", "AuthorizeSecurityGroupIngress", tagged, [group], world),
            [
                ("ec2:AuthorizeSecurityGroupIngress", "arn:aws:ec2:us-east-1:123456789012:security-group-rule/*"),
                ("ec2:CreateTags", "arn:aws:ec2:us-east-1:123456789012:security-group-rule/*"),
            ],
        )

    def test_the_accounts_first_load_balancer_creates_elbs_service_linked_role(self):
        everything_but = [statement("elasticloadbalancing:*", "*"), statement("ec2:Describe*", "*")]
        params = {"Name": "lb", "Type": "network", "Scheme": "internal"}
        first = refused("elasticloadbalancing", "CreateLoadBalancer", params, everything_but, FakeWorld(load_balancer_role=False))
        self.assertEqual([action for action, _ in first], ["iam:CreateServiceLinkedRole"])
        self.assertEqual(refused("elasticloadbalancing", "CreateLoadBalancer", params, everything_but, FakeWorld()), [])

    def test_a_resource_that_does_not_exist_is_left_to_the_service_to_answer(self):
        params = {"GroupId": "sg-gone"}
        self.assertEqual(authorizations("ec2", "DeleteSecurityGroup", params, FakeWorld(), REGION, ACCOUNT, {}), [])

    def test_each_event_is_authorized_on_its_bus_with_its_source_and_detail_type(self):
        bus = "arn:aws:events:eu-west-1:210987654321:event-bus/fleet"
        only_ours = statement("events:PutEvents", bus, {"StringEquals": {"events:source": "reverse-privatelink"}})
        ours = {"EventBusName": bus, "Source": "reverse-privatelink", "DetailType": "d", "Detail": "{}"}
        elsewhere = {**ours, "EventBusName": "other"}
        other_source = {**ours, "Source": "someone"}
        entries = {"Entries": [ours, elsewhere, other_source]}
        self.assertEqual(
            refused("events", "PutEvents", entries, [only_ours]),
            [("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/other"), ("events:PutEvents", bus)],
        )
        self.assertEqual(refused("events", "PutEvents", {"Entries": [ours]}, [only_ours]), [])


if __name__ == "__main__":
    unittest.main()
