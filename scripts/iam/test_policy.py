"""IAM's evaluation logic: each operator allowing and denying, and the decision's order."""

import unittest

from iam.policy import Authorization, UnsupportedCondition, decide

RESOURCE = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg/1"


def allowed(condition, context, resource=RESOURCE, action="elasticloadbalancing:RegisterTargets", statements=None):
    statement = {"Effect": "Allow", "Action": action, "Resource": "*"}
    if condition is not None:
        statement["Condition"] = condition
    document = {"Statement": statements or [statement]}
    context = {k.lower(): v for k, v in context.items()}
    return decide([("test", document)], Authorization(action, resource, context)).allowed


class Operators(unittest.TestCase):
    def test_string_equals_and_its_negation(self):
        condition = {"StringEquals": {"aws:ResourceTag/owner": "me"}}
        self.assertTrue(allowed(condition, {"aws:ResourceTag/owner": "me"}))
        self.assertFalse(allowed(condition, {"aws:ResourceTag/owner": "you"}))
        self.assertFalse(allowed(condition, {}), "an absent key never equals")
        negated = {"StringNotEquals": {"aws:ResourceTag/owner": "me"}}
        self.assertTrue(allowed(negated, {"aws:ResourceTag/owner": "you"}))
        self.assertFalse(allowed(negated, {"aws:ResourceTag/owner": "me"}))
        self.assertTrue(allowed(negated, {}), "a negated operator holds for an absent key")

    def test_string_equals_is_case_sensitive_unless_told(self):
        self.assertFalse(allowed({"StringEquals": {"k:x": "Me"}}, {"k:x": "me"}))
        self.assertTrue(allowed({"StringEqualsIgnoreCase": {"k:x": "Me"}}, {"k:x": "me"}))
        self.assertFalse(allowed({"StringNotEqualsIgnoreCase": {"k:x": "Me"}}, {"k:x": "me"}))

    def test_condition_key_names_are_case_insensitive(self):
        self.assertTrue(allowed({"StringEquals": {"AWS:RequestedRegion": "us-east-1"}}, {"aws:requestedregion": "us-east-1"}))

    def test_string_like_and_not_like(self):
        self.assertTrue(allowed({"StringLike": {"k:x": "users:*"}}, {"k:x": "users:abc"}))
        self.assertTrue(allowed({"StringLike": {"k:x": "a?c"}}, {"k:x": "abc"}))
        self.assertFalse(allowed({"StringLike": {"k:x": "users:*"}}, {"k:x": "stack-id"}))
        self.assertTrue(allowed({"StringNotLike": {"k:x": "users:*"}}, {"k:x": "stack-id"}))
        self.assertFalse(allowed({"StringNotLike": {"k:x": "users:*"}}, {"k:x": "users:abc"}))

    def test_arn_like_and_not_like(self):
        pattern = "arn:aws:iam::*:role/*-FunctionRole-*"
        self.assertTrue(allowed({"ArnLike": {"aws:PrincipalArn": pattern}}, {"aws:PrincipalArn": "arn:aws:iam::1:role/s-FunctionRole-x"}))
        self.assertFalse(allowed({"ArnLike": {"aws:PrincipalArn": pattern}}, {"aws:PrincipalArn": "arn:aws:iam::1:role/other"}))
        self.assertTrue(allowed({"ArnNotLike": {"aws:PrincipalArn": pattern}}, {"aws:PrincipalArn": "arn:aws:iam::1:role/other"}))
        self.assertTrue(allowed({"ArnEquals": {"aws:SourceArn": "arn:aws:sns:*"}}, {"aws:SourceArn": "arn:aws:sns:x"}))
        self.assertFalse(allowed({"ArnNotEquals": {"aws:SourceArn": "arn:aws:sns:x"}}, {"aws:SourceArn": "arn:aws:sns:x"}))

    def test_bool_and_numeric(self):
        self.assertTrue(allowed({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "true"}))
        self.assertFalse(allowed({"Bool": {"aws:SecureTransport": True}}, {"aws:SecureTransport": "false"}))
        self.assertTrue(allowed({"NumericLessThanEquals": {"k:n": "10"}}, {"k:n": "10"}))
        self.assertFalse(allowed({"NumericGreaterThan": {"k:n": "10"}}, {"k:n": "10"}))
        self.assertTrue(allowed({"NumericNotEquals": {"k:n": "1"}}, {"k:n": "2"}))

    def test_null_tests_presence(self):
        key = "aws:ResourceTag/reverse-privatelink:stack-id"
        self.assertTrue(allowed({"Null": {key: "false"}}, {key: "s"}))
        self.assertFalse(allowed({"Null": {key: "false"}}, {}))
        self.assertTrue(allowed({"Null": {key: "true"}}, {}))
        self.assertFalse(allowed({"Null": {key: "true"}}, {key: "s"}))

    def test_if_exists_holds_for_an_absent_key_only(self):
        condition = {"StringEqualsIfExists": {"k:x": "a"}}
        self.assertTrue(allowed(condition, {}))
        self.assertTrue(allowed(condition, {"k:x": "a"}))
        self.assertFalse(allowed(condition, {"k:x": "b"}))

    def test_for_all_values_is_true_for_an_absent_key_and_checks_every_value(self):
        condition = {"ForAllValues:StringLike": {"aws:TagKeys": ["reverse-privatelink:users:*"]}}
        self.assertTrue(allowed(condition, {"aws:TagKeys": ["reverse-privatelink:users:a", "reverse-privatelink:users:b"]}))
        self.assertFalse(allowed(condition, {"aws:TagKeys": ["reverse-privatelink:users:a", "reverse-privatelink:stack-id"]}))
        self.assertTrue(allowed(condition, {}), "vacuously true, as AWS evaluates it")

    def test_for_any_value_needs_one_match(self):
        condition = {"ForAnyValue:StringEquals": {"aws:TagKeys": ["a", "b"]}}
        self.assertTrue(allowed(condition, {"aws:TagKeys": ["z", "b"]}))
        self.assertFalse(allowed(condition, {"aws:TagKeys": ["z"]}))
        self.assertFalse(allowed(condition, {}))
        self.assertTrue(allowed({"ForAnyValue:StringNotLike": {"aws:TagKeys": ["a*"]}}, {"aws:TagKeys": ["ab", "z"]}))

    def test_keys_are_anded_and_values_ored(self):
        condition = {"StringEquals": {"k:a": ["1", "2"], "k:b": "3"}}
        self.assertTrue(allowed(condition, {"k:a": "2", "k:b": "3"}))
        self.assertFalse(allowed(condition, {"k:a": "2", "k:b": "4"}))
        self.assertFalse(allowed({**condition, "StringLike": {"k:c": "x*"}}, {"k:a": "1", "k:b": "3", "k:c": "y"}))

    def test_an_unknown_operator_fails_loudly(self):
        with self.assertRaises(UnsupportedCondition):
            allowed({"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}}, {})


class Decisions(unittest.TestCase):
    def test_an_explicit_deny_wins_over_an_allow(self):
        statements = [
            {"Effect": "Allow", "Action": "elasticloadbalancing:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "elasticloadbalancing:RegisterTargets", "Resource": RESOURCE},
        ]
        self.assertFalse(allowed(None, {}, statements=statements))

    def test_nothing_allowing_is_an_implicit_deny_naming_the_nearest_statement(self):
        document = {"Statement": [{"Sid": "Own", "Effect": "Allow", "Action": "elasticloadbalancing:RegisterTargets",
                                   "Resource": "*", "Condition": {"StringEquals": {"aws:ResourceTag/owner": "me"}}}]}
        decision = decide([("role/p", document)], Authorization("elasticloadbalancing:RegisterTargets", RESOURCE, {}))
        self.assertFalse(decision.allowed)
        self.assertEqual((decision.how, decision.statement), ("implicit deny", "role/p/Own"))
        self.assertIn("aws:ResourceTag/owner", decision.detail)

    def test_actions_match_case_insensitively_with_wildcards_and_not_action(self):
        self.assertTrue(allowed(None, {}, action="ec2:DescribeSubnets", statements=[{"Effect": "Allow", "Action": "EC2:describe*", "Resource": "*"}]))
        self.assertFalse(allowed(None, {}, action="ec2:DescribeSubnets", statements=[{"Effect": "Allow", "NotAction": "ec2:Describe*", "Resource": "*"}]))

    def test_resources_match_with_wildcards_and_not_resource(self):
        statement = {"Effect": "Allow", "Action": "*", "Resource": "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*"}
        self.assertTrue(allowed(None, {}, statements=[statement]))
        self.assertFalse(allowed(None, {}, resource="arn:aws:ec2:us-east-1:1:vpc/vpc-1", statements=[statement]))
        self.assertFalse(allowed(None, {}, statements=[{"Effect": "Allow", "Action": "*", "NotResource": RESOURCE}]))


if __name__ == "__main__":
    unittest.main()
