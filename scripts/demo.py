#!/usr/bin/env python3
"""Runs the built Lambda binary against moto server, as Lambda, CloudFormation and EventBridge would.

Starts moto on loopback and a DNS responder that answers the emulator's RDS
endpoint names with private addresses (as public DNS does for a non-public RDS
endpoint); seeds a VPC with three subnets in three zones, a DB subnet group and
an Aurora cluster of two instances; runs the binary as the template's two functions,
each behind a Lambda Runtime API of its own, and plays through the builder:
events/database-security-groups.json and create.json (the cluster's identifier alone);
a failover in the emulator followed by events/rds-failover.json through the follower
(the target moves to the new writer); update.json and delete.json through the builder;
after the Create and after breaking the path, a `{"Diagnose": {}}` report from the builder.
The main resource reports to a fleet bus in another region (ReportToEventBus, with fleet.yaml's
rule delivering to a queue): each report the bus heard is printed after each step.
Each CloudFormation answer is received on a local listener; at the end nothing may be
left in the emulator. The emulator authorizes every request of the two functions by the
template's own policies, as AWS would (the builder's and the follower's roles, and the
policy made from the lookup's answer); any refusal stops the demo, naming it.
Needs only boto3, moto, dnslib, policy_sentry and cfn-flip (the Makefile's venv) and the binary; no AWS account.
"""

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
from cfn_flip import to_json
from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "orders"
# Where each instance lives, and the private address DNS gives its endpoint name.
INSTANCES = {"orders-1": ("us-east-1a", "10.0.1.50"), "orders-2": ("us-east-1b", "10.0.2.50")}
# The fleet report's bus, in another region than the stack, as a StackSet's usually is.
FLEET_REGION = "eu-west-1"
FLEET_BUS = f"arn:aws:events:{FLEET_REGION}:123456789012:event-bus/reverse-privatelink-fleet"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DENIALS = ROOT / "target" / "demo-denials.log"


def start_moto(denials=DENIALS):
    """moto server as the tests run it: with the AWS behaviour it lacks and IAM enforced
    (scripts/moto_server.py), writing what it refuses to `denials`."""
    port = free_port()
    log_path = ROOT / "target" / f"{denials.stem.split('-')[0]}-moto.log"
    log = open(log_path, "w")
    denials.write_text("")
    server = [sys.executable, str(ROOT / "scripts" / "moto_server.py"), "-H", "127.0.0.1", "-p", str(port), "--denials", str(denials)]
    process = subprocess.Popen(server, stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return process, endpoint
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit(f"moto server did not start; see {log_path.relative_to(ROOT)}")


class Dns(BaseResolver):
    """Answers A queries from a table the demo changes, NXDOMAIN for anything else."""

    def __init__(self):
        self.records = {}
        self.server = DNSServer(self, port=free_udp_port(), address="127.0.0.1", logger=Quiet())
        self.server.start_thread()
        self.address = f"127.0.0.1:{self.server.server.server_address[1]}"

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(self.records[name]), ttl=5))
        return reply


class Quiet:
    """dnslib's logger, silenced: the demo prints what matters itself."""

    def __getattr__(self, _name):
        return lambda *args, **kwargs: None


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(ec2, rds, dns):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
        for i, zone in enumerate(["us-east-1a", "us-east-1b", "us-east-1c"], start=1)
    ]
    # The consumer's endpoint will be in us-east-1d (use1-az4 here), where the DB subnet group has no subnet.
    consumer_subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.4.0/24", AvailabilityZone="us-east-1d")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="database", Description="the database", VpcId=vpc)["GroupId"]
    # A group of the producer's own for the load balancer, which the update moves it into.
    lb_group = ec2.create_security_group(GroupName="import-load-balancer", Description="the import's load balancer", VpcId=vpc)["GroupId"]
    rds.create_db_subnet_group(DBSubnetGroupName="orders-subnets", DBSubnetGroupDescription="orders", SubnetIds=subnets)
    cluster = rds.create_db_cluster(
        DBClusterIdentifier=CLUSTER, Engine="aurora-mysql", MasterUsername="admin", MasterUserPassword="demo-password-1",
        DBSubnetGroupName="orders-subnets", VpcSecurityGroupIds=[group], Port=3306,
    )["DBCluster"]
    for instance, (zone, address) in INSTANCES.items():
        created = rds.create_db_instance(
            DBInstanceIdentifier=instance, DBClusterIdentifier=CLUSTER, Engine="aurora-mysql",
            DBInstanceClass="db.r6g.large", AvailabilityZone=zone,
        )["DBInstance"]
        dns.records[created["Endpoint"]["Address"].lower()] = address
    dns.records[cluster["Endpoint"].lower()] = INSTANCES["orders-1"][1]
    return {
        "vpc": vpc, "subnets": subnets, "consumer_subnet": consumer_subnet, "security_group": group, "lb_group": lb_group,
        "cluster_endpoint": cluster["Endpoint"].lower(),
    }


def deploy_stack(endpoint, stack_id, attributes, parameters=None):
    """Maps the two functions' keys to the template's roles, rendered for the stack (its parameters, and the lookup's answer)."""
    keys = {"builder": "FunctionRole", "follower": "FollowerRole"}
    body = json.dumps({"stack_id": stack_id, "attributes": attributes, "parameters": parameters or {}, "keys": keys})
    request = urllib.request.Request(f"{endpoint}/_iam/principals", data=body.encode(), method="POST")
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


def fleet_bus(session):
    """The collecting side of the fleet report in another region, as fleet.yaml makes it (its
    rule's pattern), with a queue standing in for its log group. Returns a reader of the reports."""
    config = {**session, "region_name": FLEET_REGION}
    events, sqs = boto3.client("events", **config), boto3.client("sqs", **config)
    name = FLEET_BUS.rsplit("/", 1)[1]
    events.create_event_bus(Name=name)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    fleet = json.loads(to_json((ROOT / "fleet.yaml").read_text()))
    pattern = fleet["Resources"]["KeepEveryReport"]["Properties"]["EventPattern"]
    events.put_rule(Name="keep-every-report", EventBusName=name, EventPattern=json.dumps(pattern))
    target = {"Id": "queue", "Arn": f"arn:aws:sqs:{FLEET_REGION}:123456789012:{name}"}
    events.put_targets(Rule="keep-every-report", EventBusName=name, Targets=[target])

    def heard():
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return [json.loads(m["Body"])["detail"] for m in messages]

    return heard


def refused(denials=DENIALS):
    """What the emulator refused, as AWS would, one line each."""
    return [json.loads(line) for line in denials.read_text().splitlines() if line.strip()]


def sync_line(log_path, action):
    """The fields of the sync's last log line with `action`, as CloudWatch would show them."""
    for line in reversed(log_path.read_text().splitlines()):
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if fields.get("action") == action:
            return json.dumps({k: fields[k] for k in ("database", "old", "new", "writer_instance", "action", "millis")})
    return "(none found)"


def describe_rules(ec2, group, mark_added=False):
    """A group's rules as "in tcp 3306 from 10.0.0.0/16", marking those the function added."""
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroupRules"]
    shown = []
    for rule in sorted(rules, key=lambda r: (r["IsEgress"], r.get("FromPort", -1))):
        protocol = "all" if rule["IpProtocol"] == "-1" else f"{rule['IpProtocol']} {rule.get('FromPort')}"
        peer = rule.get("CidrIpv4") or rule.get("ReferencedGroupInfo", {}).get("GroupId", "?")
        text = f"out {protocol} to {peer}" if rule["IsEgress"] else f"in {protocol} from {peer}"
        if mark_added and any(t["Key"] == "reverse-privatelink:stack-id" for t in rule.get("Tags", [])):
            text += " (added by the function, removed with the stack)"
        shown.append(text)
    return shown or ["no rules"]


def print_report(report):
    """A Diagnose report as a person reads it: a line per check, marked ok or FAIL."""
    print(f"    Ok: {report['Ok']}" + (f" ({report['Detail']})" if report.get("Detail") else ""))
    for chain in report["Chains"]:
        print(f"    {chain['ServiceId']} ({chain['ServiceName']})")
        for check in chain["Checks"]:
            mark = "ok  " if check["Ok"] else "FAIL"
            print(f"      {mark} {check['Check']}: {check['Detail']}")


def writer(rds):
    members = rds.describe_db_clusters(DBClusterIdentifier=CLUSTER)["DBClusters"][0]["DBClusterMembers"]
    return next(m["DBInstanceIdentifier"] for m in members if m["IsClusterWriter"])


def targets(elb, target_group):
    return sorted(d["Target"]["Id"] for d in elb.describe_target_health(TargetGroupArn=target_group)["TargetHealthDescriptions"])


class RuntimeApi:
    """The Lambda Runtime API: hands the binary one event at a time."""

    def __init__(self):
        self.events = queue.Queue()
        self.ended = {}
        self.lock = threading.Condition()
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    return self.send_error(404)
                request_id, body, deadline_ms = runtime.events.get()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline_ms))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", f"arn:aws:lambda:{REGION}:123456789012:function:reverse-privatelink")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                parts = self.path.strip("/").split("/")
                self.send_response(202)
                self.end_headers()
                if len(parts) == 5 and parts[2] == "invocation":
                    with runtime.lock:
                        runtime.ended[parts[3]] = (parts[4], body.decode())
                        runtime.lock.notify_all()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def invoke(self, request_id, event, timeout=120):
        deadline_ms = int((time.time() + timeout) * 1000)
        self.events.put((request_id, json.dumps(event).encode(), deadline_ms))
        with self.lock:
            if not self.lock.wait_for(lambda: request_id in self.ended, timeout=timeout + 30):
                sys.exit(f"the function never finished invocation {request_id}")
            return self.ended[request_id]


class CloudFormation:
    """Stands in for the presigned S3 URL CloudFormation reads answers from."""

    def __init__(self):
        self.answers = queue.Queue()
        answers = self.answers

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_PUT(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.end_headers()
                answers.put(json.loads(body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, request_id):
        return f"http://127.0.0.1:{self.server.server_address[1]}/cloudformation/{request_id}?X-Amz-Signature=demo"


def fill(value, values):
    """Replaces "{{Name}}" placeholders, whole strings only, with `values[Name]`."""
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    if isinstance(value, str) and value.startswith("{{") and value.endswith("}}"):
        return values[value[2:-2]]
    return value


def inventory(ec2, elb):
    return {
        "load balancers": len(elb.describe_load_balancers()["LoadBalancers"]),
        "target groups": len(elb.describe_target_groups()["TargetGroups"]),
        "endpoint services": len(ec2.describe_vpc_endpoint_service_configurations()["ServiceConfigurations"]),
        "security groups of its own": len(ec2.describe_security_groups(Filters=[{"Name": "tag-key", "Values": ["reverse-privatelink:stack-id"]}])["SecurityGroups"]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=str(ROOT / "target" / "debug" / "reverse-privatelink"))
    args = parser.parse_args()
    (ROOT / "target").mkdir(exist_ok=True)

    moto, endpoint = start_moto()
    functions = []
    try:
        # The demo's own clients sign with the emulator's unchecked `admin` key; the functions with their roles' keys.
        session = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="admin", aws_secret_access_key="demo")
        ec2, elb, rds = boto3.client("ec2", **session), boto3.client("elbv2", **session), boto3.client("rds", **session)
        dns = Dns()
        world = seed(ec2, rds, dns)
        print(f"==> moto server at {endpoint} (no AWS account involved); DNS responder at {dns.address}")
        print(f"    seeded {world['vpc']}: subnets {', '.join(world['subnets'])} in a DB subnet group (us-east-1a, b, c),")
        print(f"    and {world['consumer_subnet']} in us-east-1d (zone ID use1-az4), outside it,")
        print(f"    Aurora cluster {CLUSTER}: " + ", ".join(f"{i} in {z} at {a}" for i, (z, a) in INSTANCES.items()) + f"; writer {writer(rds)}")

        # One binary, two functions as the template deploys them: the builder answers
        # CloudFormation, the follower takes the schedule's and RDS's events.
        builder, follower, cloudformation = RuntimeApi(), RuntimeApi(), CloudFormation()
        stack_id = json.loads((ROOT / "events" / "create.json").read_text())["StackId"]
        roles = deploy_stack(endpoint, stack_id, {}, {"ReportToEventBus": FLEET_BUS})
        heard = fleet_bus(session)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_REGION": REGION,
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            "REVERSE_PRIVATELINK_DNS_SERVER": dns.address,
            "REVERSE_PRIVATELINK_STACK_ID": stack_id,
        }
        logs = {}
        for name, runtime in (("builder", builder), ("follower", follower)):
            logs[name] = ROOT / "target" / f"demo-{name}.log"
            log = open(logs[name], "w")
            function_env = {
                **env,
                "AWS_LAMBDA_RUNTIME_API": runtime.address,
                "AWS_LAMBDA_FUNCTION_NAME": f"reverse-privatelink-{name}",
                "AWS_ACCESS_KEY_ID": name,
            }
            functions.append(subprocess.Popen([args.binary], env=function_env, stdout=log, stderr=log))
        print(f"==> running {args.binary} as two functions, each through a local Lambda Runtime API:")
        print(f"    the builder for CloudFormation (logs: {logs['builder'].relative_to(ROOT)}),")
        print(f"    the follower for the schedule and RDS events (logs: {logs['follower'].relative_to(ROOT)});")
        print("    the emulator authorizes each of their requests as AWS would, by the template's own policies:")
        for role, policies in roles.items():
            print(f"    {role}: {', '.join(policies)}")

        values = {"Database": CLUSTER, "LoadBalancerGroups": [world["lb_group"]]}

        def deliver(name):
            """An EventBridge event: no CloudFormation answer, just the invocation's end."""
            event = fill(json.loads((ROOT / "events" / f"{name}.json").read_text()), values)
            started = time.monotonic()
            how, detail = follower.invoke(event["id"], event)
            if how != "response":
                sys.exit(f"{name}: the invocation failed: {detail}")
            took = time.monotonic() - started
            stop_if_refused(name)
            return took

        def diagnose(why):
            """The builder invoked directly, as the stack's DiagnoseCommand output does."""
            how, body = builder.invoke(f"diagnose-{time.monotonic_ns()}", {"Diagnose": {}})
            if how != "response":
                sys.exit(f"Diagnose: the invocation failed: {body}")
            print(f"\n==> Diagnose ({why}): aws lambda invoke --payload '{{\"Diagnose\": {{}}}}' to the builder")
            report = json.loads(body)
            print_report(report)
            stop_if_refused("Diagnose")
            return report

        def look_up(event):
            """What CloudFormation does before the main resource's Create or Update: the lookup gets
            the same properties, and DatabaseNetworkPolicy is made (or updated) from its answer."""
            lookup = json.loads((ROOT / "events" / "database-security-groups.json").read_text())
            lookup.update(RequestType=event["RequestType"], RequestId=f"{event['RequestId']}-lookup", ResourceProperties=event["ResourceProperties"])
            lookup["ResponseURL"] = cloudformation.url(lookup["RequestId"])
            if event["RequestType"] == "Update":
                lookup.update(PhysicalResourceId="reverse-privatelink-database-security-groups", OldResourceProperties=event["OldResourceProperties"])
            how, detail = builder.invoke(lookup["RequestId"], lookup)
            answer = cloudformation.answers.get(timeout=30)
            if how != "response" or answer["Status"] != "SUCCESS":
                sys.exit(f"the lookup before {event['RequestType']} failed: {detail} {answer.get('Reason')}")
            deploy_stack(endpoint, stack_id, {f"DatabaseSecurityGroups.{k}": answer["Data"][k] for k in ("Arns", "VpcArn")})
            if event["RequestType"] == "Create":
                print("\n==> Create (database-security-groups.json) to the builder, as CloudFormation creates the lookup first: SUCCESS")
                print(f"    the builder's role may change inbound rules of these groups only: {answer['Data']['Arns']}")
                print(f"    and make the load balancer's own group in this VPC only: {answer['Data']['VpcArn']}")

        def tell_fleet():
            for report in heard():
                fields = [report["Event"], report["Outcome"], report["ServiceId"] or "-", report["ServiceName"] or "-",
                          f"zones {report['AvailabilityZoneIds'] or '-'}", f"writer {report['TargetIps'] or '-'}"]
                if report["PreviousServiceId"]:
                    fields.append(f"(replaces {report['PreviousServiceId']})")
                print(f"    the fleet's bus ({FLEET_REGION}) heard: {' '.join(fields)}")

        def play(name):
            template = json.loads((ROOT / "events" / f"{name}.json").read_text())
            event = fill(template, {**values, "ResponseURL": cloudformation.url(template["RequestId"])})
            if event["ResourceType"] == "Custom::ReversePrivateLink" and event["RequestType"] != "Delete":
                look_up(event)
            # The main resource reports to the fleet's bus (the template passes ReportToEventBus to it alone).
            if event["ResourceType"] == "Custom::ReversePrivateLink":
                for properties in ("ResourceProperties", "OldResourceProperties"):
                    if properties in event:
                        event[properties]["ReportToEventBus"] = FLEET_BUS
            how, detail = builder.invoke(event["RequestId"], event)
            if how != "response":
                sys.exit(f"{name}: the invocation failed: {detail}")
            answer = cloudformation.answers.get(timeout=30)
            print(f"\n==> {event['RequestType']} ({name}.json) to the builder: {answer['Status']}")
            if answer["Status"] != "SUCCESS":
                print(f"    Reason: {answer.get('Reason')}")
            stop_if_refused(name)
            if answer["Status"] != "SUCCESS":
                sys.exit(f"{name}: {answer['Status']}")
            tell_fleet()
            return answer

        def stop_if_refused(step):
            """Every request the functions made must have been allowed, as AWS would have to."""
            denials = refused()
            if denials:
                for denial in denials:
                    print(f"    REFUSED {denial['role']}: {denial['action']} on {denial['resource']} ({denial['request']}; nearest statement: {denial['nearest']}: {denial['detail']})")
                sys.exit(f"{step}: the template's policies refused {len(denials)} request(s), as AWS would; see above and {DENIALS.relative_to(ROOT)}")

        created = play("create")
        values["PhysicalResourceId"] = created["PhysicalResourceId"]
        data = created["Data"]
        print(f"    from Database={CLUSTER!r} alone (no address, subnets or port typed):")
        for key in ["ServiceId", "ServiceName", "AvailabilityZones", "AvailabilityZoneIds", "LoadBalancerDnsName", "Database", "WriterInstance", "TargetIps", "TargetHealth"]:
            print(f"    {key:20} {data[key]}")
        asked = json.loads((ROOT / "events" / "create.json").read_text())["ResourceProperties"]["ConsumerAvailabilityZoneIds"]
        served = data["AvailabilityZoneIds"].split(",")
        lb_subnets = elb.describe_load_balancers(LoadBalancerArns=[data["LoadBalancerArn"]])["LoadBalancers"][0]["AvailabilityZones"]
        print(f"    consumer's zones asked: {', '.join(asked)}; served: {', '.join(served)}"
              f" ({'all honoured' if set(asked) <= set(served) else 'NOT honoured'}; the load balancer's subnets:"
              f" {', '.join(z['SubnetId'] for z in lb_subnets)})")
        if not set(asked) <= set(served) or world["consumer_subnet"] not in {z["SubnetId"] for z in lb_subnets}:
            sys.exit("    the consumer's zone is not served")
        print(f"    PrivateLink traffic checked against the load balancer's inbound rules: {data['EnforceSecurityGroupInboundRulesOnPrivateLinkTraffic']}")
        for group in data["SecurityGroupIds"].split(","):
            print(f"    load balancer security group {group} (its own): " + "; ".join(describe_rules(ec2, group)) + " (nothing in: PrivateLink needs no inbound rule)")
        print(f"    database security group {world['security_group']}: " + "; ".join(describe_rules(ec2, world["security_group"], mark_added=True)))
        print("    Give the consumer ServiceName and AvailabilityZoneIds (zone names differ between accounts, zone IDs do not).")
        report = diagnose("the path as built")
        if not report["Ok"]:
            sys.exit("    the fresh chain does not diagnose as healthy")

        target_group = data["TargetGroupArn"]
        before, old_writer = targets(elb, target_group), writer(rds)
        rds.failover_db_cluster(DBClusterIdentifier=CLUSTER)
        new_writer = writer(rds)
        dns.records[world["cluster_endpoint"]] = INSTANCES[new_writer][1]
        values["NewWriter"] = new_writer
        print(f"\n==> failover in the emulator: writer {old_writer} -> {new_writer}; delivering rds-failover.json (RDS-EVENT-0071) to the follower")
        took = deliver("rds-failover")
        after = targets(elb, target_group)
        print(f"    target {', '.join(before)} -> {', '.join(after)} in {took * 1000:.0f} ms (event delivered -> new writer registered, old deregistered)")
        print(f"    the follower's log line for it: {sync_line(logs['follower'], 'retargeted')}")
        tell_fleet()
        if after != [INSTANCES[new_writer][1]]:
            sys.exit("    the target did not follow the writer")
        took = deliver("scheduled")
        print(f"    scheduled check (scheduled.json) {took * 1000:.0f} ms later: target {', '.join(targets(elb, target_group))}, unchanged")

        updated = play("update")
        principals = ec2.describe_vpc_endpoint_service_permissions(ServiceId=updated["PhysicalResourceId"])["AllowedPrincipals"]
        print(f"    same service ID: {updated['PhysicalResourceId'] == created['PhysicalResourceId']}; zones served: {updated['Data']['AvailabilityZoneIds']}")
        print(f"    allowed principals: {', '.join(sorted(p['Principal'] for p in principals))}")
        print(f"    consumers may connect from: {updated['Data']['SupportedRegions']} too (cross-region PrivateLink)")
        own_left = inventory(ec2, elb)["security groups of its own"]
        print(f"    the load balancer is now in your group {updated['Data']['SecurityGroupIds']} ({own_left} security groups of its own left);"
              f" database security group {world['security_group']}: " + "; ".join(describe_rules(ec2, world["security_group"], mark_added=True)))

        # A new name cannot be given to a load balancer: a new chain, which CloudFormation then cleans the old one up after.
        renamed = play("rename")
        values["ReplacedPhysicalResourceId"], values["PhysicalResourceId"] = values["PhysicalResourceId"], renamed["PhysicalResourceId"]
        print(f"    a rename replaces the chain: {values['ReplacedPhysicalResourceId']} -> {renamed['PhysicalResourceId']};"
              f" give the consumer the new ServiceName {renamed['Data']['ServiceName']}")
        shared = [r for r in ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [world["security_group"]]}])["SecurityGroupRules"] if not r["IsEgress"]]
        users = [t["Value"] for r in shared for t in r.get("Tags", []) if t["Key"].startswith("reverse-privatelink:users:")]
        print(f"    both chains reach the database through your group, so they share its rule, which records them both: {', '.join(users)}")
        play("cleanup")
        print("    CloudFormation's clean-up removed the old chain; the database's rule stays for the new one: "
              + "; ".join(describe_rules(ec2, world["security_group"], mark_added=True)))

        # Someone removes the rule that lets the load balancer into the database: the path breaks.
        rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [world["security_group"]]}])["SecurityGroupRules"]
        added = [r["SecurityGroupRuleId"] for r in rules if not r["IsEgress"] and "ReferencedGroupInfo" in r]
        ec2.revoke_security_group_ingress(GroupId=world["security_group"], SecurityGroupRuleIds=added)
        print(f"\n==> someone removes {', '.join(added)} from the database's security group {world['security_group']}")
        report = diagnose("after that")
        if report["Ok"]:
            sys.exit("    the diagnosis missed the broken path")

        play("delete")
        print(f"    database security group {world['security_group']}: " + "; ".join(describe_rules(ec2, world["security_group"], mark_added=True)))
        left = inventory(ec2, elb)
        print("    left in the emulator: " + ", ".join(f"{n} {what}" for what, n in left.items()))
        if any(left.values()):
            sys.exit("    something was left behind")
        stop_if_refused("the demo")
        print("\nDone: created, updated and deleted; nothing left; every request of the two functions was allowed by their roles.")
    finally:
        for function in functions:
            function.kill()
        moto.kill()


if __name__ == "__main__":
    main()
