#!/usr/bin/env python3
"""make bench: speed, calls and memory of the built Lambda binary against moto server.

Runs the release binary through a local Lambda Runtime API against moto, behind a
proxy that counts every AWS call, can add latency to each, keeps a new load
balancer `provisioning` for a while, and keeps a deleted endpoint service
`Deleting` and a deleted load balancer describable for a while. Prints one table,
each figure beside its budget, and exits non-zero when one is missed.

The chain measured: fixed TargetIps, given SecurityGroupIds, three subnets, one
consumer principal (the properties of the issue's first measurement). No AWS account.
"""

import argparse
import http.client
import io
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import REGION, ROOT, CloudFormation, Dns, RuntimeApi, deploy_stack, refused, start_moto  # noqa: E402
from demo import seed as seed_database  # noqa: E402

WRITER_IP = "10.0.1.25"
STACK_ID = "arn:aws:cloudformation:us-east-1:123456789012:stack/import-db/2b1c6e70-7d3a-4f6e-9a51-0c2f4e8b9d10"
LATENCY = 0.100
PROVISIONING = 20.0
# What a Delete of a chain with its own security group and a database rule called before
# the figure had a budget (README, Performance): it may not call more.
OWN_GROUP_DELETE_CALLS = 13
DELETING = 8.0


class Proxy:
    """Between the function and moto: counts calls, adds latency, plays AWS's slow states."""

    def __init__(self, upstream):
        self.upstream = urllib.parse.urlparse(upstream)
        self.latency = 0.0
        self.provisioning = 0.0
        self.deleting = 0.0
        self.lock = threading.Lock()
        self.calls = []  # (start, end, action)
        self.active_at = {}  # load balancer ARN -> when it turns active
        self.lb_gone_at = {}  # load balancer ARN -> when a deleted one stops being described
        self.service_gone_at = {}  # service ID -> when a deleted one stops being described
        self.described = {}  # ARN or service ID -> last answer describing it
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers, answer = proxy.handle(self.headers, body)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def forward(self, headers, body):
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
        connection.request("POST", "/", body=body, headers=forwarded)
        response = connection.getresponse()
        answer = response.read()
        result = response.status, response.getheaders(), answer
        connection.close()
        return result

    def handle(self, headers, body):
        start = time.monotonic()
        target = headers.get("X-Amz-Target")
        form = urllib.parse.parse_qs(body.decode(errors="replace")) if not target else {}
        action = target.split(".")[-1] if target else form.get("Action", ["?"])[0]
        if self.latency:
            time.sleep(self.latency)
        status, response_headers, answer = self.play(action, form, headers, body)
        with self.lock:
            self.calls.append((start, time.monotonic(), action))
        return status, response_headers, answer

    def play(self, action, form, headers, body):
        now = time.monotonic()
        first = lambda key: form.get(key, [None])[0]
        if action == "DescribeVpcEndpointServiceConfigurations" and first("ServiceId.1"):
            service = first("ServiceId.1")
            if now < self.service_gone_at.get(service, 0) and service in self.described:
                text = re.sub(r"<serviceState>\w+</serviceState>", "<serviceState>Deleting</serviceState>", self.described[service])
                return 200, [("Content-Type", "text/xml")], text.encode()
        if action == "DescribeLoadBalancers" and first("LoadBalancerArns.member.1"):
            arn = first("LoadBalancerArns.member.1")
            if now < self.lb_gone_at.get(arn, 0) and arn in self.described:
                return 200, [("Content-Type", "text/xml")], self.described[arn].encode()
        status, response_headers, answer = self.forward(headers, body)
        text = answer.decode(errors="replace")
        if status == 200 and action == "CreateLoadBalancer":
            for arn in re.findall(r"<LoadBalancerArn>([^<]+)</LoadBalancerArn>", text):
                self.active_at[arn] = now + self.provisioning
        if status == 200 and action == "DescribeLoadBalancers":
            arns = re.findall(r"<LoadBalancerArn>([^<]+)</LoadBalancerArn>", text)
            if len(arns) == 1:
                self.described[arns[0]] = text
                if now < self.active_at.get(arns[0], 0):
                    text = text.replace("<Code>active</Code>", "<Code>provisioning</Code>")
        if status == 200 and action == "DescribeVpcEndpointServiceConfigurations" and first("ServiceId.1"):
            self.described[first("ServiceId.1")] = text
        if status == 200 and action == "DeleteVpcEndpointServiceConfigurations":
            self.service_gone_at[first("ServiceId.1")] = now + self.deleting
        if status == 200 and action == "DeleteLoadBalancer":
            self.lb_gone_at[first("LoadBalancerArn")] = now + self.deleting
        return status, response_headers, text.encode()

    def calls_between(self, start, end):
        with self.lock:
            return [action for (s, _, action) in self.calls if start <= s <= end]

    def round_trips(self, start, end):
        """The longest chain of calls each made after the previous one answered, within [start, end]:
        how many times the event waited for AWS in a row (parallel calls count once)."""
        with self.lock:
            calls = sorted((s, e) for (s, e, _) in self.calls if start <= s and e <= end)
        depth = []
        for i, (s, e) in enumerate(calls):
            before = [depth[j] for j, (_, pe) in enumerate(calls[:i]) if pe <= s]
            depth.append(1 + max(before, default=0))
        return max(depth, default=0)


class Function:
    """The built binary, run as Lambda would, answering a local CloudFormation."""

    def __init__(self, binary, endpoint, dns=None):
        self.runtime, self.cloudformation = RuntimeApi(), CloudFormation()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "AWS_LAMBDA_RUNTIME_API": self.runtime.address,
            "AWS_LAMBDA_FUNCTION_NAME": "reverse-privatelink",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_REGION": REGION,
            # The builder's key: the emulator authorizes its every request by the template's policies.
            "AWS_ACCESS_KEY_ID": "builder",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_ENDPOINT_URL": endpoint,
        }
        if dns:
            # The loopback responder that gives the emulator's RDS endpoint names private addresses.
            env["REVERSE_PRIVATELINK_DNS_SERVER"] = dns
        self.log = open(ROOT / "target" / "bench-lambda.log", "a")
        self.process = subprocess.Popen([binary], env=env, stdout=self.log, stderr=self.log)
        self.count = 0

    def request(self, kind, properties, physical=None, old=None, timeout=300, logical_id="ReversePrivateLink"):
        """Sends a CloudFormation request; returns (answer, seconds until CloudFormation had it, seconds until the invocation ended)."""
        self.count += 1
        request_id = f"bench-{os.getpid()}-{time.time_ns()}-{self.count}"
        event = {
            "RequestType": kind,
            "ResponseURL": self.cloudformation.url(request_id),
            "StackId": STACK_ID,
            "RequestId": request_id,
            "ResourceType": f"Custom::{logical_id}",
            "LogicalResourceId": logical_id,
            "ResourceProperties": properties,
        }
        if physical:
            event["PhysicalResourceId"] = physical
        if old is not None:
            event["OldResourceProperties"] = old
        start = time.monotonic()
        answered = {}

        def collect():
            answered["answer"] = self.cloudformation.answers.get(timeout=timeout)
            answered["at"] = time.monotonic()

        waiter = threading.Thread(target=collect)
        waiter.start()
        how, detail = self.runtime.invoke(request_id, event, timeout=timeout)
        ended = time.monotonic()
        waiter.join()
        if how != "response":
            sys.exit(f"{kind}: the invocation failed: {detail}")
        return answered["answer"], answered["at"] - start, ended - start, start, ended

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self):
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.process.kill()
        self.process.wait()


def seed(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
        for i, zone in enumerate(["us-east-1a", "us-east-1b", "us-east-1c"], start=1)
    ]
    group = ec2.create_security_group(GroupName="nlb", Description="bench", VpcId=vpc)["GroupId"]
    return vpc, subnets, group


def properties(subnets, group, principals=("arn:aws:iam::123456789012:root",)):
    return {
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:reverse-privatelink",
        "ServiceTimeout": "1800",
        "TargetIps": [WRITER_IP],
        "SubnetIds": subnets,
        "SecurityGroupIds": [group],
        "AllowedPrincipals": list(principals),
    }


def lifecycle(function, proxy, props):
    """Create, Update (a second principal, in place) and Delete; what each cost."""
    figures = {}
    cpu = function.cpu_seconds()
    answer, answered, _, start, ended = function.request("Create", props)
    if answer["Status"] != "SUCCESS":
        sys.exit(f"Create failed: {answer.get('Reason')}")
    physical = answer["PhysicalResourceId"]
    figures["Create"] = (answered, proxy.calls_between(start, ended), function.cpu_seconds() - cpu, proxy.round_trips(start, start + answered))
    more = dict(props, AllowedPrincipals=props["AllowedPrincipals"] + ["arn:aws:iam::210987654321:root"])
    cpu = function.cpu_seconds()
    answer, answered, _, start, ended = function.request("Update", more, physical, props)
    if answer["Status"] != "SUCCESS" or answer["PhysicalResourceId"] != physical:
        sys.exit(f"Update failed or replaced: {answer}")
    figures["Update"] = (answered, proxy.calls_between(start, ended), function.cpu_seconds() - cpu, proxy.round_trips(start, start + answered))
    cpu = function.cpu_seconds()
    answer, answered, _, start, ended = function.request("Delete", more, physical)
    if answer["Status"] != "SUCCESS":
        sys.exit(f"Delete failed: {answer.get('Reason')}")
    figures["Delete"] = (answered, proxy.calls_between(start, ended), function.cpu_seconds() - cpu, proxy.round_trips(start, start + answered))
    return figures


def cold_start(binary, runs=5):
    """Milliseconds from exec to the binary's first request for an event."""
    times = []
    for _ in range(runs):
        runtime = RuntimeApi()
        polled = threading.Event()
        original = runtime.events.get

        def first_poll(*args, **kwargs):
            polled.set()
            return original(*args, **kwargs)

        runtime.events.get = first_poll
        env = {"AWS_LAMBDA_RUNTIME_API": runtime.address, "AWS_REGION": REGION, "AWS_LAMBDA_FUNCTION_NAME": "bench",
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
               "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "PATH": os.environ.get("PATH", "")}
        start = time.monotonic()
        process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        polled.wait(10)
        times.append((time.monotonic() - start) * 1000)
        process.kill()
        process.wait()
        runtime.server.shutdown()
    return statistics.median(times)


def big_account(elb, subnets, vpc, load_balancers=1000, target_groups=3000):
    """Foreign resources, as an account with EKS clusters has them."""
    tags = [{"Key": "kubernetes.io/cluster/other", "Value": "owned"}]
    for i in range(load_balancers):
        elb.create_load_balancer(Name=f"eks-nlb-{i}", Type="network", Scheme="internal", Subnets=subnets, Tags=tags)
    for i in range(target_groups):
        elb.create_target_group(Name=f"eks-tg-{i}", Protocol="TCP", Port=30000 + i % 1000, VpcId=vpc, TargetType="ip", Tags=tags)


def zip_size(binary):
    """Bytes of the binary zipped as bootstrap.zip (deflated, as cargo-lambda and sam package it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, Path(binary).read_bytes())
    return len(buffer.getvalue())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "reverse-privatelink"))
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    (ROOT / "target").mkdir(exist_ok=True)
    rows = []

    def row(figure, value, budget, ok):
        rows.append((figure, value, budget, ok))

    denials = ROOT / "target" / "bench-denials.log"
    moto, endpoint = start_moto(denials)
    function = None
    try:
        session = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="admin", aws_secret_access_key="bench")
        deploy_stack(endpoint, STACK_ID, {})
        ec2, elb = boto3.client("ec2", **session), boto3.client("elbv2", **session)
        vpc, subnets, group = seed(ec2)
        props = properties(subnets, group)
        proxy = Proxy(endpoint)
        function = Function(args.binary, proxy.endpoint)

        lifecycle(function, proxy, props)  # warms moto and the function up; not measured
        print("==> empty account, no added latency", flush=True)
        plain = lifecycle(function, proxy, props)
        print("==> empty account, 100 ms added to every AWS call", flush=True)
        proxy.latency = LATENCY
        slow = lifecycle(function, proxy, props)
        proxy.latency = 0.0
        for kind, budget in (("Create", 6), ("Update", 4), ("Delete", 6)):
            round_trips = slow[kind][3]
            row(f"{kind}: round trips to AWS in a row before CloudFormation has the answer", str(round_trips), f"≤ {budget}", round_trips <= budget)

        print("==> its own security group and a database rule, 100 ms added to every AWS call", flush=True)
        dns = Dns()
        seed_database(ec2, boto3.client("rds", **session), dns)
        owning = Function(args.binary, proxy.endpoint, dns=dns.address)
        try:
            own_props = {"ServiceToken": props["ServiceToken"], "ServiceTimeout": "1800", "Database": "orders",
                         "AllowedPrincipals": props["AllowedPrincipals"]}
            # As CloudFormation does first: the lookup, whose answer bounds the builder's role to
            # the database's groups and VPC (DatabaseNetworkPolicy).
            answer = owning.request("Create", own_props, logical_id="DatabaseSecurityGroups")[0]
            if answer["Status"] != "SUCCESS":
                sys.exit(f"the database security groups lookup failed: {answer.get('Reason')}")
            deploy_stack(endpoint, STACK_ID, {f"DatabaseSecurityGroups.{k}": answer["Data"][k] for k in ("Arns", "VpcArn")})
            proxy.latency = LATENCY
            own = lifecycle(owning, proxy, own_props)
            proxy.latency = 0.0
        finally:
            owning.stop()
        round_trips = own["Delete"][3]
        row("Delete, own group and database rule: round trips in a row", str(round_trips), "≤ 6", round_trips <= 6)
        calls = len(own["Delete"][1])
        row("Delete, own group and database rule: AWS calls", str(calls), f"≤ {OWN_GROUP_DELETE_CALLS}", calls <= OWN_GROUP_DELETE_CALLS)
        row("Delete, own group and database rule: wall time with 100 ms per call", f"{own['Delete'][0]:.2f} s", "—", True)
        # Create's 15th call is its question to CloudFormation before the first write, beside
        # the first reads (no extra round trip): a delivery repeated after the answer must
        # not put back what later Updates changed (README, "Repeated deliveries stay silent").
        for kind, budget in (("Create", 15), ("Update", None), ("Delete", 10)):
            calls = len(plain[kind][1])
            row(f"{kind}: AWS calls, empty account", str(calls), f"≤ {budget}" if budget else "—", budget is None or calls <= budget)
        for kind in ("Create", "Update", "Delete"):
            row(f"{kind}: wall time with 100 ms per call", f"{slow[kind][0]:.2f} s", "—", True)

        print("==> waits: the load balancer provisions 20 s; the service and the load balancer take 8 s to go", flush=True)
        proxy.latency, proxy.provisioning, proxy.deleting = LATENCY, PROVISIONING, DELETING
        answer, answered, _, start, _ = function.request("Create", props)
        if answer["Status"] != "SUCCESS":
            sys.exit(f"Create failed: {answer.get('Reason')}")
        arn = answer["Data"]["LoadBalancerArn"]
        active = proxy.active_at[arn]
        slack = start + answered - active
        polls = [c[0] for c in proxy.calls if c[2] == "DescribeLoadBalancers" and start <= c[0] <= active + 3]
        rate = (len(polls) - 1) / (polls[-1] - polls[0])
        row("Create: answer after the load balancer turned active", f"{slack:.1f} s", "≤ 3 s", slack <= 3)
        row("Create: describe calls per second while it provisions", f"{rate:.2f}", "≤ 0.5", rate <= 0.5)
        physical = answer["PhysicalResourceId"]
        answer, answered, _, start, _ = function.request("Delete", props, physical)
        if answer["Status"] != "SUCCESS":
            sys.exit(f"Delete failed: {answer.get('Reason')}")
        service_gone = proxy.service_gone_at[physical]
        lb_deleted = min(c[0] for c in proxy.calls if c[2] == "DeleteLoadBalancer" and c[0] >= start)
        lb_gone = proxy.lb_gone_at[arn]
        row("Delete: load balancer deleted after the service was gone", f"{lb_deleted - service_gone:.1f} s", "≤ 3 s", lb_deleted - service_gone <= 3)
        row("Delete: answer after the load balancer was gone", f"{start + answered - lb_gone:.1f} s", "≤ 3 s", start + answered - lb_gone <= 3)
        # Each wait: the describes after its delete call, up to a moment after the thing was gone.
        rates = []
        for deleted_by, action, gone in (
            ("DeleteVpcEndpointServiceConfigurations", "DescribeVpcEndpointServiceConfigurations", service_gone),
            ("DeleteLoadBalancer", "DescribeLoadBalancers", lb_gone),
        ):
            deleted = min(c[0] for c in proxy.calls if c[2] == deleted_by and c[0] >= start)
            polls = [c[0] for c in proxy.calls if c[2] == action and deleted < c[0] <= gone + 3]
            if len(polls) > 1:
                rates.append((len(polls) - 1) / (polls[-1] - polls[0]))
        rate = max(rates, default=0.0)
        row("Delete: describe calls per second while waiting", f"{rate:.2f}", "≤ 0.5", rate <= 0.5)
        proxy.latency, proxy.provisioning, proxy.deleting = 0.0, 0.0, 0.0

        print("==> 1,000 foreign load balancers and 3,000 foreign target groups", flush=True)
        big_account(elb, subnets, vpc)
        big = lifecycle(function, proxy, props)
        for kind in ("Create", "Update", "Delete"):
            empty, crowded = len(plain[kind][1]), len(big[kind][1])
            row(f"{kind}: AWS calls, 4,000-resource account", f"{crowded} (empty: {empty})", f"≤ {empty + 2}", crowded <= empty + 2)

        rss = function.peak_rss_mb()
        row("Peak RSS over all of it", f"{rss:.1f} MB", "≤ 30 MB", rss <= 30)
        for kind in ("Create", "Update", "Delete"):
            row(f"{kind}: CPU time", f"{plain[kind][2] * 1000:.0f} ms", "—", True)
        refusals = refused(denials)
        row("Requests the template's policies refuse (as AWS would)", str(len(refusals)), "0", not refusals)
    finally:
        if function:
            function.stop()
        moto.kill()

    start_ms = cold_start(args.binary)
    row("Cold start: exec to the first request for an event", f"{start_ms:.0f} ms", "≤ 100 ms", start_ms <= 100)
    # The budget the README's Performance section explains (opt-level "z", fat LTO).
    size = zip_size(args.binary)
    row("bootstrap.zip", f"{size:,} bytes", "≤ 6,000,000 bytes", size <= 6_000_000)

    width = max(len(r[0]) for r in rows)
    print(f"\n| {'Figure'.ljust(width)} | Value | Budget | |")
    print(f"|{'-' * (width + 2)}|---|---|---|")
    for figure, value, budget, ok in rows:
        print(f"| {figure.ljust(width)} | {value} | {budget} | {'ok' if ok else 'MISSED'} |")
    print("\ncalls per event, empty account:")
    for kind in ("Create", "Update", "Delete"):
        print(f"  {kind}: {', '.join(plain[kind][1])}")
    print(f"  Delete, own group and database rule: {', '.join(own['Delete'][1])}")
    if args.json:
        Path(args.json).write_text(json.dumps([dict(zip(("figure", "value", "budget", "ok"), r)) for r in rows], indent=1))
    missed = [r for r in rows if not r[3]]
    if missed:
        sys.exit(f"\n{len(missed)} figure(s) missed the budget")
    print("\nevery figure within budget")


if __name__ == "__main__":
    main()
