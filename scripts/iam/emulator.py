"""IAM enforcement for moto server: every request is authorized as AWS would before moto acts on it.

A WSGI middleware. Each access key is mapped to a role of a stack (`POST /_iam/principals`),
whose policies are the template's, rendered for that stack (template.py). A request signed
with such a key becomes the authorizations AWS makes for it (requests.py), each decided by
IAM's evaluation logic (policy.py); the first refused one gets AWS's answer (EC2: HTTP 403
`UnauthorizedOperation`; ELB, RDS and CloudFormation: HTTP 403 `AccessDenied`; the tagging
API and EventBridge: `AccessDeniedException`), naming the action and the resource, and the refusal is logged,
with the statement that came nearest, to stderr and to the denials file. The harness's own
key (`admin`) is not checked; any other key is refused as AWS refuses an unknown one.

Control endpoints (tests and the demo):
- `POST /_iam/principals` {"stack_id", "parameters", "attributes", "keys": {access key: role}}:
  maps keys to roles of a stack; later calls for the same stack update its parameters and
  attributes (the lookup resource's answer, say) and re-render every policy.
- `GET /_iam/denials`: the refusals so far, as JSON; `DELETE /_iam/denials` clears them.
- `POST /_iam/authorize` {"headers": {...}, "body": "..."}: decides a request another stand-in
  received (the CloudFormation stub), answering {"allowed": bool, "status", "content_type", "body"}.
"""

import json
import re
import sys
import threading
import uuid
from io import BytesIO
from pathlib import Path
from urllib.parse import parse_qsl

from .policy import decide
from .requests import NotModelled, World, authorizations
from .template import Stack, load, role_policies

ADMIN_KEY = "admin"
TEMPLATE = Path(__file__).resolve().parent.parent.parent / "template.yaml"
CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d+/([^/]+)/([^/]+)/aws4_request")


class MotoWorld(World):
    """What AWS knows before a call, read from moto's own state."""

    def __init__(self, account, region, state):
        from moto.ec2.models import ec2_backends
        from moto.elbv2.models import elbv2_backends

        self.ec2 = ec2_backends[account][region]
        self.elb = elbv2_backends[account][region]
        self.state = state

    def _ec2_exists(self, resource_id):
        if resource_id.startswith("sgr-"):
            return any(
                rule.id == resource_id
                for groups in list(self.ec2.groups.values())
                for group in list(groups.values())
                for rule in list(group.ingress_rules) + list(group.egress_rules)
            )
        if resource_id.startswith("sg-"):
            return self.ec2.get_security_group_from_id(resource_id) is not None
        if resource_id.startswith("vpce-svc-"):
            return resource_id in self.ec2.configurations
        if resource_id.startswith("vpc-"):
            return resource_id in self.ec2.vpcs
        if resource_id.startswith("subnet-"):
            return any(resource_id in subnets for subnets in self.ec2.subnets.values())
        return False

    def ec2_tags(self, resource_id):
        if not resource_id or not self._ec2_exists(resource_id):
            return None
        return dict(self.ec2.tags.get(resource_id, {}))

    def security_group_vpc(self, group_id):
        group = self.ec2.get_security_group_from_id(group_id)
        return getattr(group, "vpc_id", None)

    def _listeners(self):
        return {arn: lb for lb in list(self.elb.load_balancers.values()) for arn in list(lb.listeners)}

    def elb_tags(self, arn):
        if not arn:
            return None
        if arn not in self.elb.load_balancers and arn not in self.elb.target_groups and arn not in self._listeners():
            return None
        return dict(self.elb.tagging_service.get_tag_dict_for_resource(arn))

    def elb_arn(self, arn):
        balancer = self.elb.load_balancers.get(arn) or self._listeners().get(arn)
        if balancer is not None and balancer.type == "network":
            # moto writes `app/` for every load balancer; AWS writes `net/` for a network one.
            return arn.replace(":loadbalancer/app/", ":loadbalancer/net/").replace(":listener/app/", ":listener/net/")
        return arn

    def has_load_balancer_role(self):
        return self.state.load_balancer_role


class State:
    def __init__(self, denials_path):
        self.lock = threading.Lock()
        self.stacks = {}  # stack ID -> Stack
        self.keys = {}  # access key -> (stack ID, role)
        self.policies = {}  # (stack ID, role) -> [Policy]
        self.denials = []
        self.denials_path = denials_path
        self.load_balancer_role = False
        self.template = None

    def register(self, request):
        with self.lock:
            if self.template is None:
                self.template = load(TEMPLATE)
            stack_id = request["stack_id"]
            stack = self.stacks.setdefault(stack_id, Stack(stack_id))
            stack.parameters.update(request.get("parameters", {}))
            stack.attributes.update(request.get("attributes", {}))
            for key, role in request.get("keys", {}).items():
                self.keys[key] = (stack_id, role)
            rendered = role_policies(self.template, stack)
            for role, policies in rendered.items():
                self.policies[(stack_id, role)] = [(p.where, p.document) for p in policies]
            return {role: [p.where for p in policies] for role, policies in rendered.items()}

    def deny(self, record):
        with self.lock:
            self.denials.append(record)
            if self.denials_path:
                with open(self.denials_path, "a") as log:
                    log.write(json.dumps(record) + "\n")
        print(f"IAM DENY {json.dumps(record)}", file=sys.stderr, flush=True)


def _params(headers, body: bytes, query: str):
    """The request's parameters: query-protocol form fields, or a JSON body's fields."""
    target = headers.get("x-amz-target", "")
    if target:
        payload = json.loads(body or b"{}")
        return target.rsplit(".", 1)[-1], payload
    params = dict(parse_qsl(query))
    params.update(parse_qsl(body.decode("utf-8", "replace")))
    return params.get("Action", ""), params


def _error(service, code, message, status=403):
    request_id = str(uuid.uuid4())
    if service == "ec2":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code}</Code><Message>{_xml(message)}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
        return status, "text/xml", body
    # The JSON-protocol services: the tagging API and EventBridge answer `AccessDeniedException`.
    if service in ("tagging", "events"):
        return 400, "application/x-amz-json-1.1", json.dumps({"__type": f"{code}Exception", "Message": message})
    body = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{_xml(message)}</Message>"
        f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return status, "text/xml", body


def _xml(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Enforcement:
    def __init__(self, app, denials_path=None):
        self.app = app
        self.state = State(denials_path)

    def check(self, headers, body: bytes, query=""):
        """None when allowed, else (status, content type, body) of AWS's refusal."""
        match = CREDENTIAL.search(headers.get("authorization", ""))
        if not match:
            return None
        key, region, service = match.groups()
        action, params = _params(headers, body, query)
        name = f"{service}:{action}"
        if key == ADMIN_KEY:
            # The harness building the account: a load balancer of its own creates ELB's role too.
            self.state.load_balancer_role |= name == "elasticloadbalancing:CreateLoadBalancer"
            return None
        with self.state.lock:
            principal = self.state.keys.get(key)
            policies = self.state.policies.get(principal, []) if principal else []
        if principal is None:
            return _error(service, "InvalidClientTokenId", "The security token included in the request is invalid.")
        stack_id, role = principal
        stack = self.state.stacks[stack_id]
        role_name = f"{stack.name}-{role}-EXAMPLE"[:64]
        user = f"arn:aws:sts::{stack.account}:assumed-role/{role_name}/{role}"
        context = {"aws:PrincipalArn": f"arn:aws:iam::{stack.account}:role/{role_name}", "aws:PrincipalAccount": stack.account}
        try:
            needed = authorizations(service, action, params, MotoWorld(stack.account, region, self.state), region, stack.account, context)
        except NotModelled as missing:
            record = {"role": role, "request": name, "action": str(missing), "resource": "?", "detail": "the emulator does not model this request's authorization"}
            self.state.deny(record)
            return _error(service, "UnauthorizedOperation" if service == "ec2" else "AccessDenied", f"not modelled: {missing}")
        for authorization in needed:
            decision = decide(policies, authorization)
            if decision.allowed:
                continue
            record = {
                "role": role,
                "request": name,
                "action": authorization.action,
                "resource": authorization.resource,
                "because": authorization.because,
                "how": decision.how,
                "nearest": decision.statement,
                "detail": decision.detail,
            }
            self.state.deny(record)
            why = "with an explicit deny in an identity-based policy" if decision.how == "explicit deny" else (
                f"because no identity-based policy allows the {authorization.action} action"
            )
            on = "" if authorization.resource == "*" else f" on resource: {authorization.resource}"
            message = f"User: {user} is not authorized to perform: {authorization.action}{on} {why}"
            if service == "ec2":
                return _error(service, "UnauthorizedOperation", f"You are not authorized to perform this operation. {message}")
            return _error(service, "AccessDenied", message)
        if name == "elasticloadbalancing:CreateLoadBalancer":
            self.state.load_balancer_role = True
        return None

    def control(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        if path == "/_iam/principals" and method == "POST":
            answer = self.state.register(json.loads(body))
        elif path == "/_iam/denials" and method == "GET":
            with self.state.lock:
                answer = list(self.state.denials)
        elif path == "/_iam/denials" and method == "DELETE":
            with self.state.lock:
                self.state.denials.clear()
            answer = []
        elif path == "/_iam/authorize" and method == "POST":
            request = json.loads(body)
            headers = {k.lower(): v for k, v in request["headers"].items()}
            refused = self.check(headers, request["body"].encode())
            answer = {"allowed": True} if refused is None else dict(zip(["status", "content_type", "body"], refused), allowed=False)
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown control endpoint"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_iam/"):
            return self.control(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = BytesIO(body)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        refused = self.check(headers, body, environ.get("QUERY_STRING", ""))
        if refused is None:
            return self.app(environ, start_response)
        status, content_type, text = refused
        reason = {400: "Bad Request", 403: "Forbidden"}[status]
        start_response(f"{status} {reason}", [("Content-Type", content_type)])
        return [text.encode()]
