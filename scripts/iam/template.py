"""The template's IAM policies as CloudFormation deploys them for one stack.

Renders `template.yaml` for a stack (its ID, region, account and parameters) the way
CloudFormation resolves it: conditions, `Fn::If` and `AWS::NoValue`, `Ref` (parameters with
their defaults, pseudo parameters, the resources the policies name), `Fn::Sub`, `Fn::Join`,
`Fn::Split`, and `Fn::GetAtt` of the custom resources once their answers are known. A policy
that needs an answer not yet given is not attached yet, as CloudFormation would not have
created it. Needs only PyYAML.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

NO_VALUE = object()


class _Loader(yaml.SafeLoader):
    pass


def _intrinsic(name):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    return construct


for _tag in ["Ref", "Condition"]:
    _Loader.add_constructor(f"!{_tag}", _intrinsic(_tag))
for _tag in ["Sub", "GetAtt", "If", "Join", "Split", "Select", "Equals", "Not", "And", "Or", "FindInMap", "Base64", "GetAZs"]:
    _Loader.add_constructor(f"!{_tag}", _intrinsic(f"Fn::{_tag}"))


def load(path) -> dict:
    return yaml.load(Path(path).read_text(), Loader=_Loader)


class NotYetKnown(Exception):
    """A value CloudFormation learns only from a resource not answered yet."""


@dataclass
class Stack:
    stack_id: str
    parameters: dict = field(default_factory=dict)
    # "Logical.Attribute" -> value, for the custom resources' answers (e.g. DatabaseSecurityGroups.Arns).
    attributes: dict = field(default_factory=dict)

    @property
    def region(self):
        return self.stack_id.split(":")[3]

    @property
    def account(self):
        return self.stack_id.split(":")[4]

    @property
    def partition(self):
        return self.stack_id.split(":")[1]

    @property
    def name(self):
        return self.stack_id.split(":", 5)[5].split("/")[1]


class Renderer:
    def __init__(self, template: dict, stack: Stack):
        self.template, self.stack = template, stack
        self.parameters = {}
        for name, spec in template.get("Parameters", {}).items():
            value = stack.parameters.get(name, spec.get("Default"))
            if value is None:
                value = ""
            if spec.get("Type") == "CommaDelimitedList":
                value = value if isinstance(value, list) else ([] if value == "" else str(value).split(","))
            self.parameters[name] = value
        self._conditions = {}

    def pseudo(self, name):
        return {
            "AWS::StackId": self.stack.stack_id,
            "AWS::StackName": self.stack.name,
            "AWS::Region": self.stack.region,
            "AWS::AccountId": self.stack.account,
            "AWS::Partition": self.stack.partition,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }.get(name)

    def condition(self, name) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self.value(self.template["Conditions"][name]))
        return self._conditions[name]

    def ref(self, name):
        pseudo = self.pseudo(name)
        if pseudo is not None:
            return pseudo
        if name in self.parameters:
            return self.parameters[name]
        resource = self.template["Resources"][name]
        # What `Ref` returns for the resource types the policies name (each type's CloudFormation reference).
        if resource["Type"] == "AWS::Logs::LogGroup":
            return self.value(resource["Properties"]["LogGroupName"])
        if resource["Type"] == "AWS::IAM::Role":
            return f"{self.stack.name}-{name}-EXAMPLE"
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            return f"arn:{self.stack.partition}:iam::{self.stack.account}:policy/{self.stack.name}-{name}-EXAMPLE"
        if resource["Type"] == "AWS::Lambda::Function":
            return f"{self.stack.name}-{name}-EXAMPLE"
        raise NotYetKnown(f"Ref {name}")

    def get_att(self, logical, attribute):
        key = f"{logical}.{attribute}"
        if key in self.stack.attributes:
            return self.stack.attributes[key]
        resource = self.template["Resources"].get(logical, {})
        if resource.get("Type") == "AWS::Lambda::Function" and attribute == "Arn":
            return f"arn:{self.stack.partition}:lambda:{self.stack.region}:{self.stack.account}:function:{self.ref(logical)}"
        raise NotYetKnown(f"GetAtt {key}")

    def value(self, node):
        if isinstance(node, list):
            return [v for v in (self.value(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (name, argument), = node.items()
            if name == "Ref":
                return self.ref(argument)
            if name == "Condition":
                return self.condition(argument)
            if name == "Fn::If":
                condition, yes, no = argument
                return self.value(yes if self.condition(condition) else no)
            if name == "Fn::Equals":
                left, right = (self.value(a) for a in argument)
                return str(left) == str(right)
            if name == "Fn::Not":
                return not self.value(argument[0])
            if name == "Fn::And":
                return all(self.value(a) for a in argument)
            if name == "Fn::Or":
                return any(self.value(a) for a in argument)
            if name == "Fn::Join":
                separator, items = argument
                return separator.join(str(i) for i in self.value(items))
            if name == "Fn::Split":
                separator, text = argument
                return str(self.value(text)).split(separator)
            if name == "Fn::Select":
                index, items = argument
                return self.value(items)[int(self.value(index))]
            if name == "Fn::GetAtt":
                return self.get_att(*argument)
            if name == "Fn::Sub":
                return self.sub(argument)
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not NO_VALUE}

    def sub(self, argument):
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        variables = {k: self.value(v) for k, v in variables.items()}

        def replace(match):
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name:
                return str(self.get_att(*name.split(".", 1)))
            value = self.ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def exists(self, logical) -> bool:
        condition = self.template["Resources"][logical].get("Condition")
        return condition is None or self.condition(condition)


@dataclass
class Policy:
    # "FunctionRole/logs", "DatabaseNetworkPolicy/database-network", "BuilderReadPolicy" (managed)
    where: str
    document: dict
    managed: bool

    def size(self) -> int:
        """As IAM counts toward its quotas: the JSON text without whitespace (IAM user guide, "IAM and AWS STS quotas")."""
        return len(re.sub(r"\s", "", json.dumps(self.document, separators=(",", ":"))))


def role_policies(template: dict, stack: Stack) -> dict:
    """{role logical ID: [Policy]}: each role's inline policies, the `AWS::IAM::Policy`/`RolePolicy`
    resources attached to it, and its managed policies; those that need an answer not yet
    given are left out."""
    renderer = Renderer(template, stack)
    resources = template["Resources"]
    roles = {name: [] for name, r in resources.items() if r["Type"] == "AWS::IAM::Role" and renderer.exists(name)}

    def attach(role_refs, policy: Policy):
        for role in role_refs:
            if isinstance(role, dict) and "Ref" in role and role["Ref"] in roles:
                roles[role["Ref"]].append(policy)

    for name, resource in resources.items():
        if not renderer.exists(name):
            continue
        properties = resource.get("Properties", {})
        kind = resource["Type"]
        try:
            if kind == "AWS::IAM::Role":
                for policy in properties.get("Policies", []):
                    rendered = renderer.value(policy)
                    if rendered is not NO_VALUE:
                        roles[name].append(Policy(f"{name}/{rendered['PolicyName']}", rendered["PolicyDocument"], False))
                for arn in properties.get("ManagedPolicyArns", []):
                    if isinstance(arn, dict) and "Ref" in arn:
                        managed = resources[arn["Ref"]]
                        document = renderer.value(managed["Properties"]["PolicyDocument"])
                        roles[name].append(Policy(arn["Ref"], document, True))
            elif kind in ("AWS::IAM::RolePolicy",):
                document = renderer.value(properties["PolicyDocument"])
                attach([properties["RoleName"]], Policy(f"{name}/{properties['PolicyName']}", document, False))
            elif kind == "AWS::IAM::Policy":
                document = renderer.value(properties["PolicyDocument"])
                attach(properties.get("Roles", []), Policy(f"{name}/{properties['PolicyName']}", document, False))
            elif kind == "AWS::IAM::ManagedPolicy":
                document = renderer.value(properties["PolicyDocument"])
                attach(properties.get("Roles", []), Policy(name, document, True))
        except NotYetKnown:
            continue
    return roles
