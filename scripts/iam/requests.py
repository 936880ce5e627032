"""Each API request as the authorizations AWS makes for it.

For every resource a request touches, the action on that resource's ARN with exactly the
condition keys its resource type carries (reference.py); plus what AWS authorizes beside the
action itself: tagging on creation (ELB user guide, "Tag resources during creation":
`elasticloadbalancing:AddTags` with `elasticloadbalancing:CreateAction`; EC2 user guide,
"Grant permission to tag resources during creation": `ec2:CreateTags` with `ec2:CreateAction`),
ELB's calls to EC2 on the caller's behalf, ELB's service-linked role on an account's first
load balancer, and `vpce:AllowMultiRegion` for a service's supported regions (PrivateLink
guide, "Cross-region connectivity"). A resource that does not exist yet is named by its ARN
with `*` for the ID, as AWS names it while creating it. A request naming a resource that does
not exist is left to the service, which answers NotFound.

`World` answers what AWS knows before the call: tags, the VPC of a group, a load balancer's type.
"""

from .policy import Authorization
from .reference import ELB_DEPENDENCIES, SERVICE_LINKED_ROLE, carries, resource_types


class NotModelled(Exception):
    pass


class World:
    """What the account holds now; the emulator implements it over its own state."""

    def ec2_tags(self, resource_id: str) -> dict | None:
        """A resource's tags, or None when it does not exist."""
        raise NotImplementedError

    def security_group_vpc(self, group_id: str) -> str | None:
        raise NotImplementedError

    def elb_tags(self, arn: str) -> dict | None:
        raise NotImplementedError

    def elb_arn(self, arn: str) -> str:
        """The ARN as AWS writes it (`loadbalancer/net/…` for a network load balancer)."""
        raise NotImplementedError

    def has_load_balancer_role(self) -> bool:
        """Whether ELB's service-linked role exists (created with the account's first load balancer)."""
        raise NotImplementedError


def members(params: dict, name: str) -> list:
    """`Name.1`, `Name.2`… (EC2) or `Name.member.1`… (awsQuery), in order."""
    found = []
    for key, value in params.items():
        for prefix in (f"{name}.member.", f"{name}."):
            rest = key[len(prefix) :]
            if key.startswith(prefix) and rest.isdigit():
                found.append((int(rest), value))
    return [value for _, value in sorted(found)]


def tag_list(params: dict, name: str) -> dict:
    """Tags given as `Name.N.Key`/`Name.N.Value` (or `Name.member.N.Key`)."""
    keys, values = {}, {}
    for key, value in params.items():
        for prefix in (f"{name}.member.", f"{name}."):
            if key.startswith(prefix):
                index, _, field = key[len(prefix) :].partition(".")
                if index.isdigit() and field == "Key":
                    keys[int(index)] = value
                elif index.isdigit() and field == "Value":
                    values[int(index)] = value
    return {keys[i]: values.get(i, "") for i in sorted(keys)}


def tag_specifications(params: dict) -> dict:
    """{resource type: tags} of EC2's `TagSpecification.N`."""
    specs = {}
    for key, value in params.items():
        parts = key.split(".")
        if parts[0] == "TagSpecification" and len(parts) == 3 and parts[2] == "ResourceType":
            specs[value] = tag_list(params, f"TagSpecification.{parts[1]}.Tag")
    return specs


def requested(tags: dict) -> dict:
    context = {f"aws:requesttag/{k}".lower(): v for k, v in tags.items()}
    context["aws:tagkeys"] = list(tags)
    return context


def resource_tags(tags: dict, service_prefix: str) -> dict:
    context = {}
    for k, v in tags.items():
        context[f"aws:resourcetag/{k}".lower()] = v
        context[f"{service_prefix}:resourcetag/{k}".lower()] = v
    return context


class Requests:
    def __init__(self, world: World, region: str, account: str, principal: dict):
        self.world, self.region, self.account = world, region, account
        # aws:PrincipalArn and the like, the same in every authorization of the request.
        self.principal = {k.lower(): v for k, v in principal.items()}
        self.found = []

    def add(self, action, resource, resource_type, context, because=""):
        """The authorization, keeping only the keys `resource_type` carries for `action`."""
        context = {**self.principal, "aws:requestedregion": self.region, **context}
        if action.startswith("ec2:"):
            context["ec2:region"] = self.region
        kept = {k: v for k, v in context.items() if carries(action, resource_type, _key_name(k))}
        self.found.append(Authorization(action, resource, kept, because))

    def anywhere(self, action, because=""):
        self.add(action, "*", "", {}, because)

    # --- EC2 -------------------------------------------------------------------------------

    def ec2_arn(self, kind, resource_id):
        return f"arn:aws:ec2:{self.region}:{self.account}:{kind}/{resource_id}"

    def ec2_existing(self, action, kind, resource_id, extra=None):
        tags = self.world.ec2_tags(resource_id)
        if tags is None:
            return
        context = resource_tags(tags, "ec2")
        if kind == "security-group":
            vpc = self.world.security_group_vpc(resource_id)
            context["ec2:securitygroupid"] = resource_id
            if vpc:
                context["ec2:vpc"] = self.ec2_arn("vpc", vpc)
        elif kind == "vpc":
            context["ec2:vpcid"] = resource_id
            context["ec2:tenancy"] = "default"
        self.add(action, self.ec2_arn(kind, resource_id), kind, {**context, **(extra or {})})

    def ec2_new(self, action, kind, tags, extra=None):
        self.add(action, self.ec2_arn(kind, "*"), kind, {**requested(tags), **(extra or {})})

    def ec2_tag_on_create(self, action, specifications):
        for kind, tags in specifications.items():
            context = {**requested(tags), "ec2:createaction": action.split(":")[1]}
            self.add("ec2:CreateTags", self.ec2_arn(kind, "*"), kind, context, "tag-on-create")

    def ec2(self, name, p):
        action = f"ec2:{name}"
        specs = tag_specifications(p)
        if name == "CreateSecurityGroup":
            self.ec2_new(action, "security-group", specs.get("security-group", {}))
            if p.get("VpcId"):
                self.ec2_existing(action, "vpc", p["VpcId"])
        elif name in ("AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupEgress"):
            self.ec2_existing(action, "security-group", p.get("GroupId"))
            # The rule resource is authorized only when the request carries tags (Service Authorization Reference).
            if "security-group-rule" in specs:
                self.ec2_new(action, "security-group-rule", specs["security-group-rule"])
        elif name in ("RevokeSecurityGroupIngress", "RevokeSecurityGroupEgress", "DeleteSecurityGroup"):
            self.ec2_existing(action, "security-group", p.get("GroupId"))
        elif name in ("CreateTags", "DeleteTags"):
            tags = tag_list(p, "Tag")
            for resource_id in members(p, "ResourceId"):
                self.ec2_existing(action, _ec2_kind(resource_id), resource_id, requested(tags))
        elif name == "CreateVpcEndpointServiceConfiguration":
            regions = members(p, "SupportedRegion")
            extra = {"ec2:vpcemultiregion": "true" if regions else "false", "ec2:vpceserviceregion": self.region}
            self.ec2_new(action, "vpc-endpoint-service", specs.get("vpc-endpoint-service", {}), extra)
            if regions:
                self.add("vpce:AllowMultiRegion", self.ec2_arn("vpc-endpoint-service", "*"), "vpc-endpoint-service", {})
        elif name == "ModifyVpcEndpointServiceConfiguration":
            self.ec2_existing(action, "vpc-endpoint-service", p.get("ServiceId"))
            if members(p, "AddSupportedRegion") or members(p, "RemoveSupportedRegion"):
                self.add("vpce:AllowMultiRegion", self.ec2_arn("vpc-endpoint-service", p.get("ServiceId")), "vpc-endpoint-service", {})
        elif name in ("ModifyVpcEndpointServicePermissions", "RejectVpcEndpointConnections"):
            self.ec2_existing(action, "vpc-endpoint-service", p.get("ServiceId"))
        elif name == "DeleteVpcEndpointServiceConfigurations":
            for service_id in members(p, "ServiceId"):
                self.ec2_existing(action, "vpc-endpoint-service", service_id)
        elif not resource_types(action) or name.startswith("Describe"):
            # Describe* are authorized on "*" (Service Authorization Reference: no resource types, or list access).
            self.anywhere(action)
        else:
            raise NotModelled(action)
        if specs and name not in ("CreateTags",):
            self.ec2_tag_on_create(action, specs)

    # --- Elastic Load Balancing ----------------------------------------------------------

    def elb_arn(self, kind, name):
        return f"arn:aws:elasticloadbalancing:{self.region}:{self.account}:{kind}/{name}"

    @staticmethod
    def elb_type(arn):
        """The reference's resource type of an ELB ARN: loadbalancer/net/, listener/net, targetgroup…"""
        kind = arn.split(":", 5)[5]
        if kind.startswith("targetgroup/"):
            return "targetgroup"
        family, lb_type = kind.split("/")[:2]
        return f"{family}/{lb_type}/" if family == "loadbalancer" else f"{family}/{lb_type}"

    def elb_existing(self, action, arn, extra=None):
        tags = self.world.elb_tags(arn)
        if tags is None:
            return
        aws_arn = self.world.elb_arn(arn)
        self.add(action, aws_arn, self.elb_type(aws_arn), {**resource_tags(tags, "elasticloadbalancing"), **(extra or {})})

    def elb_new(self, action, arn, tags, extra=None):
        self.add(action, arn, self.elb_type(arn), {**requested(tags), **(extra or {})})
        if tags:
            context = {**requested(tags), "elasticloadbalancing:createaction": action.split(":")[1]}
            self.add("elasticloadbalancing:AddTags", arn, self.elb_type(arn), context, "tag-on-create")

    def elb(self, name, p):
        action = f"elasticloadbalancing:{name}"
        tags = tag_list(p, "Tags")
        if name == "CreateLoadBalancer":
            family = {"network": "net", "gateway": "gwy"}.get(p.get("Type", "application"), "app")
            extra = {
                "elasticloadbalancing:scheme": p.get("Scheme", "internet-facing"),
                "elasticloadbalancing:securitygroup": members(p, "SecurityGroups"),
                "elasticloadbalancing:subnet": members(p, "Subnets")
                or [v for k, v in p.items() if k.startswith("SubnetMappings.") and k.endswith(".SubnetId")],
            }
            self.elb_new(action, self.elb_arn(f"loadbalancer/{family}", f"{p.get('Name')}/*"), tags, extra)
            if not self.world.has_load_balancer_role():
                role = f"arn:aws:iam::{self.account}:role/aws-service-role/elasticloadbalancing.amazonaws.com/AWSServiceRoleForElasticLoadBalancing"
                context = {"iam:awsservicename": "elasticloadbalancing.amazonaws.com"}
                self.add(SERVICE_LINKED_ROLE, role, "role", context, f"the account's first load balancer ({_ELB_GUIDE})")
        elif name == "CreateTargetGroup":
            self.elb_new(action, self.elb_arn("targetgroup", f"{p.get('Name')}/*"), tags)
        elif name == "CreateListener":
            lb = p.get("LoadBalancerArn")
            extra = {**requested(tags), "elasticloadbalancing:listenerprotocol": p.get("Protocol", "")}
            self.elb_existing(action, lb, extra)
            if tags and self.world.elb_tags(lb) is not None:
                lb_path = self.world.elb_arn(lb).split(":loadbalancer/", 1)[1]
                family, rest = lb_path.split("/", 1)
                listener = self.elb_arn(f"listener/{family}", f"{rest}/*")
                context = {**requested(tags), "elasticloadbalancing:createaction": name}
                self.add("elasticloadbalancing:AddTags", listener, self.elb_type(listener), context, "tag-on-create")
        elif name in ("AddTags", "RemoveTags"):
            extra = requested(tags) if name == "AddTags" else {"aws:tagkeys": members(p, "TagKeys")}
            for arn in members(p, "ResourceArns"):
                self.elb_existing(action, arn, extra)
        elif name in ("DeleteLoadBalancer", "ModifyLoadBalancerAttributes", "SetSecurityGroups", "SetSubnets", "SetIpAddressType"):
            extra = {
                "elasticloadbalancing:securitygroup": members(p, "SecurityGroups"),
                "elasticloadbalancing:subnet": members(p, "Subnets"),
            }
            self.elb_existing(action, p.get("LoadBalancerArn"), extra)
        elif name in ("DeleteTargetGroup", "ModifyTargetGroup", "ModifyTargetGroupAttributes", "RegisterTargets", "DeregisterTargets"):
            self.elb_existing(action, p.get("TargetGroupArn"))
        elif name in ("ModifyListener", "ModifyListenerAttributes", "DeleteListener"):
            self.elb_existing(action, p.get("ListenerArn"))
        elif name.startswith("Describe"):
            self.anywhere(action)
        else:
            raise NotModelled(action)
        for dependency in ELB_DEPENDENCIES.get(action, []):
            self.anywhere(dependency, f"ELB calls EC2 with the caller's permissions ({_ELB_GUIDE})")

    # --- RDS, the tagging API, CloudFormation -------------------------------------------

    def rds(self, name, p):
        action = f"rds:{name}"
        kinds = {
            "DescribeDBClusters": ("cluster", "DBClusterIdentifier"),
            "DescribeDBInstances": ("db", "DBInstanceIdentifier"),
            "DescribeDBSubnetGroups": ("subgrp", "DBSubnetGroupName"),
            "DescribeGlobalClusters": ("global-cluster", "GlobalClusterIdentifier"),
        }
        if name not in kinds:
            raise NotModelled(action)
        kind, parameter = kinds[name]
        identifier = p.get(parameter)
        if identifier:
            self.add(action, f"arn:aws:rds:{self.region}:{self.account}:{kind}:{identifier.lower()}", kind, {})
        else:
            self.anywhere(action)

    def tagging(self, name, body):
        if name != "GetResources":
            raise NotModelled(f"tag:{name}")
        self.anywhere(f"tag:{name}")

    def events(self, name, body):
        """PutEvents is authorized once per entry, on the entry's bus (its ARN, or its name in the
        caller's region and account; `default` when none), with the entry's source and detail type
        (Service Authorization Reference, Amazon EventBridge: `events:source`, `events:detail-type`)."""
        action = f"events:{name}"
        if name != "PutEvents":
            raise NotModelled(action)
        for entry in body.get("Entries", []):
            bus = entry.get("EventBusName") or "default"
            arn = bus if bus.startswith("arn:") else f"arn:aws:events:{self.region}:{self.account}:event-bus/{bus}"
            context = {"events:source": entry.get("Source", ""), "events:detail-type": entry.get("DetailType", "")}
            self.add(action, arn, "event-bus", context)

    def cloudformation(self, name, p):
        action = f"cloudformation:{name}"
        if name not in ("DescribeStacks", "DescribeStackResource", "DescribeStackResources"):
            raise NotModelled(action)
        stack = p.get("StackName")
        if not stack:
            self.anywhere(action)
            return
        arn = stack if stack.startswith("arn:") else f"arn:aws:cloudformation:{self.region}:{self.account}:stack/{stack}/*"
        self.add(action, arn, "stack", {})


_ELB_GUIDE = 'ELB user guide, "Elastic Load Balancing API permissions"'


def _key_name(lowered: str) -> str:
    """A lower-cased context key in the reference's spelling, for `carries`."""
    known = {
        "aws:requesttag/": "aws:RequestTag/",
        "aws:resourcetag/": "aws:ResourceTag/",
        "ec2:resourcetag/": "ec2:ResourceTag/",
        "elasticloadbalancing:resourcetag/": "elasticloadbalancing:ResourceTag/",
    }
    for prefix, spelled in known.items():
        if lowered.startswith(prefix):
            return spelled + lowered[len(prefix) :]
    return _SPELLING.get(lowered, lowered)


_SPELLING = {
    k.lower(): k
    for k in [
        "aws:TagKeys",
        "aws:RequestedRegion",
        "aws:PrincipalArn",
        "aws:PrincipalAccount",
        "ec2:Region",
        "ec2:SecurityGroupID",
        "ec2:Vpc",
        "ec2:VpcID",
        "ec2:Tenancy",
        "ec2:CreateAction",
        "ec2:VpceMultiRegion",
        "ec2:VpceServiceRegion",
        "elasticloadbalancing:CreateAction",
        "elasticloadbalancing:Scheme",
        "elasticloadbalancing:SecurityGroup",
        "elasticloadbalancing:Subnet",
        "elasticloadbalancing:ListenerProtocol",
        "iam:AWSServiceName",
    ]
}


def _ec2_kind(resource_id: str) -> str:
    for prefix, kind in (("sgr-", "security-group-rule"), ("sg-", "security-group"), ("vpce-svc-", "vpc-endpoint-service"), ("vpc-", "vpc"), ("subnet-", "subnet")):
        if resource_id.startswith(prefix):
            return kind
    raise NotModelled(f"tagging {resource_id}")


def authorizations(service: str, action: str, params: dict, world: World, region: str, account: str, principal: dict):
    """The authorizations AWS makes for one request to `service` (the SigV4 signing name)."""
    requests = Requests(world, region, account, principal)
    handler = {
        "ec2": requests.ec2,
        "elasticloadbalancing": requests.elb,
        "rds": requests.rds,
        "tagging": requests.tagging,
        "cloudformation": requests.cloudformation,
        "events": requests.events,
    }.get(service)
    if handler is None:
        raise NotModelled(f"{service}:{action}")
    handler(action, params)
    return requests.found
