"""IAM's decision on one authorization, from identity-based policies.

The evaluation logic of the IAM user guide ("Policy evaluation logic", "IAM JSON policy
elements: Condition operators"): an explicit Deny wins, then an Allow, else the request is
implicitly denied. A statement applies when its Action (or NotAction), its Resource (or
NotResource) and every condition match: operators are ANDed, keys within one operator are
ANDed, values of one key are ORed. A key absent from the request context makes a positive
operator false, a negated one (`StringNotEquals`, `ArnNotLike`...) true, an `...IfExists`
one true; `Null` tests presence; `ForAllValues:` is true for an absent or empty key,
`ForAnyValue:` false. Condition key names are case-insensitive. Operators this module does
not know make the evaluation fail loudly rather than guess.
"""

import re
from dataclasses import dataclass, field


class UnsupportedCondition(Exception):
    pass


def as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_GLOBS: dict = {}


def glob(pattern: str, text: str, ignore_case: bool = False) -> bool:
    """IAM's wildcards: `*` any run of characters, `?` one character."""
    key = (pattern, ignore_case)
    regex = _GLOBS.get(key)
    if regex is None:
        body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        regex = _GLOBS[key] = re.compile(f"^{body}$", re.DOTALL | (re.IGNORECASE if ignore_case else 0))
    return regex.match(text) is not None


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


# The positive operator each name reduces to, and whether it is negated.
_COMPARE = {
    "StringEquals": lambda actual, wanted: actual == wanted,
    "StringEqualsIgnoreCase": lambda actual, wanted: actual.lower() == wanted.lower(),
    "StringLike": lambda actual, wanted: glob(wanted, actual),
    # ARN operators compare segment by segment with wildcards; a glob over the whole ARN is the same for ARNs.
    "ArnEquals": lambda actual, wanted: glob(wanted, actual),
    "ArnLike": lambda actual, wanted: glob(wanted, actual),
    "NumericEquals": lambda a, w: _number(a) is not None and _number(a) == _number(w),
    "NumericLessThan": lambda a, w: _number(a) is not None and _number(a) < _number(w),
    "NumericLessThanEquals": lambda a, w: _number(a) is not None and _number(a) <= _number(w),
    "NumericGreaterThan": lambda a, w: _number(a) is not None and _number(a) > _number(w),
    "NumericGreaterThanEquals": lambda a, w: _number(a) is not None and _number(a) >= _number(w),
    "Bool": lambda actual, wanted: actual.lower() == wanted.lower(),
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NumericNotEquals": "NumericEquals",
}


@dataclass(frozen=True)
class Operator:
    base: str
    negated: bool
    if_exists: bool
    qualifier: str | None  # "ForAllValues", "ForAnyValue" or None

    @staticmethod
    def parse(name: str) -> "Operator":
        qualifier = None
        for prefix in ("ForAllValues:", "ForAnyValue:"):
            if name.startswith(prefix):
                qualifier, name = prefix[:-1], name[len(prefix) :]
        if_exists = name.endswith("IfExists") and name != "Null"
        if if_exists:
            name = name[: -len("IfExists")]
        if name == "Null":
            return Operator("Null", False, False, qualifier)
        if name in _NEGATED:
            return Operator(_NEGATED[name], True, if_exists, qualifier)
        if name in _COMPARE:
            return Operator(name, False, if_exists, qualifier)
        raise UnsupportedCondition(f"condition operator {name!r} is not modelled")

    def _matches_any(self, actual: str, wanted: list) -> bool:
        return any(_COMPARE[self.base](actual, _text(w)) for w in wanted)

    def holds(self, actual, wanted) -> bool:
        """Whether the condition holds for the context's value `actual` (None when absent)."""
        wanted = as_list(wanted)
        if self.base == "Null":
            absent = actual is None or actual == []
            return any((absent if _text(w).lower() == "true" else not absent) for w in wanted)
        values = [_text(v) for v in as_list(actual)]
        if self.qualifier == "ForAllValues":
            # True for an absent key: the trap the IAM guide warns of, evaluated as AWS does.
            return all(self._matches_any(v, wanted) != self.negated for v in values)
        if self.qualifier == "ForAnyValue":
            return any(self._matches_any(v, wanted) != self.negated for v in values)
        if actual is None:
            return self.if_exists or self.negated
        if self.negated:
            return not any(self._matches_any(v, wanted) for v in values)
        return any(self._matches_any(v, wanted) for v in values)


def lookup(context: dict, key: str):
    """The context's value for `key`, condition key names being case-insensitive."""
    return context.get(key.lower())


def failed_condition(statement: dict, context: dict):
    """The first condition of `statement` that does not hold, as (operator, key, wanted, actual), or None."""
    for operator_name, block in (statement.get("Condition") or {}).items():
        operator = Operator.parse(operator_name)
        for key, wanted in block.items():
            actual = lookup(context, key)
            if not operator.holds(actual, wanted):
                return operator_name, key, wanted, actual
    return None


def _any_glob(patterns, text, ignore_case=False):
    return any(glob(p, text, ignore_case) for p in as_list(patterns))


def action_matches(statement: dict, action: str) -> bool:
    if "NotAction" in statement:
        return not _any_glob(statement["NotAction"], action, ignore_case=True)
    return _any_glob(statement.get("Action"), action, ignore_case=True)


def resource_matches(statement: dict, resource: str) -> bool:
    if "NotResource" in statement:
        return not _any_glob(statement["NotResource"], resource)
    return _any_glob(statement.get("Resource"), resource)


@dataclass(frozen=True)
class Authorization:
    """One question IAM answers: may the principal do `action` on `resource`, in `context`."""

    action: str
    resource: str
    # Lower-cased key -> a string, or a list for a multivalued key.
    context: dict = field(default_factory=dict, hash=False, compare=False)
    # Why the request needs it, for the log: "tag-on-create", "ELB calls EC2 on the caller's behalf"...
    because: str = ""


@dataclass
class Decision:
    allowed: bool
    # "explicit deny", "allowed", "implicit deny"
    how: str
    # The statement that decided, or for an implicit deny the nearest one and why it missed.
    statement: str | None = None
    detail: str = ""


def decide(policies, authorization: Authorization) -> Decision:
    """IAM's decision. `policies` is [(where, document)]; `where` names the policy in the log."""
    statements = [
        (f"{where}/{statement.get('Sid', '#%d' % n)}", statement)
        for where, document in policies
        for n, statement in enumerate(as_list(document.get("Statement")))
    ]
    action, resource, context = authorization.action, authorization.resource, authorization.context
    applicable = []
    for where, statement in statements:
        if action_matches(statement, action) and resource_matches(statement, resource):
            applicable.append((where, statement, failed_condition(statement, context)))
    for where, statement, failed in applicable:
        if statement.get("Effect") == "Deny" and failed is None:
            return Decision(False, "explicit deny", where)
    for where, statement, failed in applicable:
        if statement.get("Effect") == "Allow" and failed is None:
            return Decision(True, "allowed", where)
    return _nearest(statements, applicable, authorization)


def _nearest(statements, applicable, authorization: Authorization) -> Decision:
    """An implicit deny, naming the statement that came closest and what it missed."""
    for where, statement, failed in applicable:
        if statement.get("Effect") == "Allow":
            operator, key, wanted, actual = failed
            seen = "absent from the request" if actual is None else f"{actual!r} in the request"
            return Decision(
                False, "implicit deny", where, f"its condition {operator} {key} = {wanted!r} does not hold ({key} is {seen})"
            )
    for where, statement in statements:
        if statement.get("Effect") == "Allow" and action_matches(statement, authorization.action):
            resources = as_list(statement.get("Resource") or statement.get("NotResource"))
            return Decision(False, "implicit deny", where, f"it allows the action on {resources}, not on this resource")
    service = authorization.action.split(":", 1)[0].lower()
    for where, statement in statements:
        actions = as_list(statement.get("Action"))
        if statement.get("Effect") == "Allow" and any(a.lower().startswith(f"{service}:") for a in actions):
            return Decision(False, "implicit deny", where, f"it allows other {service} actions, not {authorization.action}")
    return Decision(False, "implicit deny", None, "no statement allows the action")
