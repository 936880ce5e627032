#!/usr/bin/env python3
"""moto server with the AWS behaviour this project relies on and moto 5.2.5 lacks.

Run as `python scripts/moto_server.py -H 127.0.0.1 -p PORT [--denials FILE]` with the Makefile's
venv; the tests and the demo start it instead of `moto_server`. It prints the port as its first
line; with `-p 0` it binds one the system picks, so tests running side by side never race for a
port another one takes. Each patch models what AWS documents (../shared/emulator-notes.md lists
the gaps); production code never works around the emulator.

- IAM: every request is authorized by the template's own policies as AWS evaluates them, before
  moto acts on it (iam/emulator.py); the harness's own key, `admin`, is not checked.

- DescribeNetworkInterfaces filters `association.public-ip` and `addresses.association.public-ip`
  (EC2 API reference), so a publicly accessible database's interface can be found by its public address.
- ModifyDBSubnetGroup keeps the group it modifies (moto pops it and never stores it back).
- A Multi-AZ DB instance outside a cluster reports `SecondaryAvailabilityZone`, another zone of its DB
  subnet group (RDS API reference, DBInstance), and `RebootDBInstance` of it fails over: the two zones swap,
  as `ForceFailover` does on AWS.
- A network load balancer reports `EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic`: `on` once it has
  security groups (AWS's default, ELB user guide, "Security groups for your NLB"), else what
  `SetSecurityGroups` last set (moto drops the parameter).
- `CreateLoadBalancer` with the name of an existing load balancer returns it when the settings are
  the same, and fails with `DuplicateLoadBalancerName` otherwise (ELB API reference,
  CreateLoadBalancer: "This operation is idempotent"); moto creates a second one.
- `CreateListener` on a port the load balancer already listens on returns that listener when the
  settings are the same, and fails with `DuplicateListener` otherwise (ELB API reference,
  CreateListener: "This operation is idempotent"); moto creates a second listener on the port.
- `CreateSecurityGroup` refuses the names AWS refuses: starting with `sg-`, longer than 255
  characters, or with characters outside its set (EC2 API reference, CreateSecurityGroup,
  GroupName), with AWS's `InvalidParameterValue`; moto takes any name.
- `DeleteSecurityGroup` refuses with `DependencyViolation` while a rule of another group references the
  group or a load balancer uses it (EC2 API reference, DeleteSecurityGroup); moto deletes it.
- `CreateVpcEndpointServiceConfiguration` with a `ClientToken` already used returns the service that
  request made while it exists (EC2 API reference, "Ensuring idempotency"); moto ignores the token
  and makes a second service when two deliveries of one request create at once.
- `DescribeVpcEndpointConnections` answers, with no connections: an endpoint service no consumer has
  connected to yet (a test that needs connections adds them at its proxy).
"""

import argparse
import os
import sys
import threading

from moto.core.responses import ActionResult
from moto.ec2.exceptions import DependencyViolationError, InvalidParameterValue
from moto.ec2.models.elastic_network_interfaces import NetworkInterface
from moto.ec2.models.security_groups import SecurityGroupBackend
from moto.ec2.responses.vpc_service_configuration import VPCEndpointServiceConfiguration
from moto.elbv2.exceptions import DuplicateListenerError, DuplicateLoadBalancerName
from moto.elbv2.models import ELBv2Backend, FakeLoadBalancer
from moto.elbv2.responses import ELBV2Response
from moto.rds.models import DBInstance, RDSBackend


def _interface_filter(original):
    def get_filter_value(self, filter_name, method_name=None):
        if filter_name in ("association.public-ip", "addresses.association.public-ip"):
            return self.public_ip
        return original(self, filter_name, method_name)

    return get_filter_value


def _modify_db_subnet_group(self, subnet_name, description, subnets):
    group = self.subnet_groups.get(subnet_name)
    if group is None:
        from moto.rds.exceptions import DBSubnetGroupNotFoundError

        raise DBSubnetGroupNotFoundError(subnet_name)
    group.subnets = subnets
    if description is not None:
        group.description = description
    return group


def _secondary_zone(self):
    if not self.multi_az or getattr(self, "db_cluster_identifier", None):
        return None
    if getattr(self, "_secondary_zone", None) is None:
        group = getattr(self, "db_subnet_group", None)
        zones = sorted({subnet["SubnetAvailabilityZone"]["Name"] for subnet in getattr(group, "subnets", [])})
        self._secondary_zone = next((zone for zone in zones if zone != self.availability_zone), None)
    return self._secondary_zone


def _reboot(original):
    def reboot_db_instance(self, db_instance_identifier, *args, **kwargs):
        instance = original(self, db_instance_identifier, *args, **kwargs)
        secondary = _secondary_zone(instance)
        if secondary:
            instance._secondary_zone, instance.availability_zone = instance.availability_zone, secondary
        return instance

    return reboot_db_instance


def _enforcement(self):
    if getattr(self, "_enforcement", None):
        return self._enforcement
    return "on" if getattr(self, "security_groups", None) else None


def _set_security_groups(original):
    def set_security_groups(self):
        result = original(self)
        enforce = self._get_param("EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic")
        if enforce:
            balancer = self.elbv2_backend.load_balancers.get(self._get_param("LoadBalancerArn"))
            if balancer is not None:
                balancer._enforcement = enforce
        return result

    return set_security_groups


def _idempotent_create(original):
    def create_load_balancer(self, name, security_groups, subnet_ids, subnet_mappings=None, scheme="internet-facing", loadbalancer_type=None, *args, **kwargs):
        existing = next((lb for lb in list(self.load_balancers.values()) if lb.name == name), None)
        if existing is None:
            return original(self, name, security_groups, subnet_ids, subnet_mappings, scheme, loadbalancer_type, *args, **kwargs)
        subnets = set(subnet_ids or []) | {m["SubnetId"] for m in subnet_mappings or []}
        same = (
            existing.scheme == scheme
            and existing.type == (loadbalancer_type or "application")
            and {subnet.id for subnet in existing.subnets} == subnets
            and set(existing.security_groups or []) == set(security_groups or [])
        )
        if not same:
            raise DuplicateLoadBalancerName()
        return existing

    return create_load_balancer


def _idempotent_listener(original):
    def create_listener(self, load_balancer_arn, protocol, port, ssl_policy, certificate, actions, *args, **kwargs):
        balancer = self.load_balancers.get(load_balancer_arn)
        existing = [l for l in (balancer.listeners.values() if balancer else []) if str(l.port) == str(port)]
        if existing:
            listener = existing[0]
            forwards = lambda listed: [(a.get("Type"), a.get("TargetGroupArn")) for a in listed]
            same = listener.protocol == (protocol or "").upper() and forwards([a.data for a in listener.default_actions]) == forwards(actions)
            if not same:
                raise DuplicateListenerError()
            return listener
        return original(self, load_balancer_arn, protocol, port, ssl_policy, certificate, actions, *args, **kwargs)

    return create_listener


# A VPC security group's name: a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{}!$*.
_GROUP_NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-:/()#,@[]+=&;{}!$*")


def _checked_group_name(original):
    def create_security_group(self, name, *args, **kwargs):
        if name.lower().startswith("sg-"):
            raise InvalidParameterValue("Group names may not be in the format sg-*.")
        if len(name) > 255 or not set(name) <= _GROUP_NAME_CHARACTERS:
            raise InvalidParameterValue(f"Value ({name}) for parameter GroupName is invalid.")
        return original(self, name, *args, **kwargs)

    return create_security_group


def _dependent_group(original):
    def delete_security_group(self, name=None, group_id=None):
        if group_id:
            from moto.elbv2.models import elbv2_backends

            referenced = any(
                rule.source_group.get("GroupId") == group_id
                for groups in self.groups.values()
                for group in groups.values()
                if group.id != group_id
                for rule in list(group.ingress_rules) + list(group.egress_rules)
            )
            balancers = elbv2_backends[self.account_id][self.region_name].load_balancers.values()
            if referenced or any(group_id in (lb.security_groups or []) for lb in balancers):
                raise DependencyViolationError(f"resource {group_id} has a dependent object")
        return original(self, name, group_id)

    return delete_security_group


_TOKENS = {}  # (account, region, client token) -> service ID
_TOKENS_LOCK = threading.Lock()


def _idempotent_service(original):
    def create_vpc_endpoint_service_configuration(self):
        token = self._get_param("ClientToken")
        if not token:
            return original(self)
        key = (self.current_account, self.region, token)
        with _TOKENS_LOCK:
            existing = self.ec2_backend.configurations.get(_TOKENS.get(key))
            if existing is not None:
                return ActionResult({"ServiceConfiguration": existing, "ClientToken": token})
            result = original(self)
            _TOKENS[key] = result.result["ServiceConfiguration"].id
            return result

    return create_vpc_endpoint_service_configuration


def _describe_vpc_endpoint_connections(self):
    return ActionResult({"VpcEndpointConnections": []})


NetworkInterface.get_filter_value = _interface_filter(NetworkInterface.get_filter_value)
VPCEndpointServiceConfiguration.describe_vpc_endpoint_connections = _describe_vpc_endpoint_connections
VPCEndpointServiceConfiguration.create_vpc_endpoint_service_configuration = _idempotent_service(
    VPCEndpointServiceConfiguration.create_vpc_endpoint_service_configuration
)
FakeLoadBalancer.enforce_security_group_inbound_rules_on_private_link_traffic = property(_enforcement)
ELBV2Response.set_security_groups = _set_security_groups(ELBV2Response.set_security_groups)
ELBv2Backend.create_load_balancer = _idempotent_create(ELBv2Backend.create_load_balancer)
ELBv2Backend.create_listener = _idempotent_listener(ELBv2Backend.create_listener)
SecurityGroupBackend.create_security_group = _checked_group_name(SecurityGroupBackend.create_security_group)
SecurityGroupBackend.delete_security_group = _dependent_group(SecurityGroupBackend.delete_security_group)
RDSBackend.modify_db_subnet_group = _modify_db_subnet_group
DBInstance.secondary_availability_zone = property(_secondary_zone)
RDSBackend.reboot_db_instance = _reboot(RDSBackend.reboot_db_instance)


def serve(host, port, denials):
    """moto.server.main's server (same app, handler and threads) behind IAM enforcement
    (iam/emulator.py). With port 0 it binds one the system picks and prints it first."""
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    from iam.emulator import Enforcement

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    server = make_server(host, port, Enforcement(app, denials), threaded=True, request_handler=MotoRequestHandler)
    # moto builds some URLs from MOTO_PORT; main() sets it from -p.
    os.environ.setdefault("MOTO_PORT", str(server.port))
    print(server.port, flush=True)
    if port == 0:
        # The reader may close the pipe once it has the port; later output must not break on it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="moto server with IAM enforcement and the patches above")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=0)
    parser.add_argument("--denials", help="append each refused authorization here, one JSON object per line")
    arguments = parser.parse_args()
    serve(arguments.host, arguments.port, arguments.denials)
