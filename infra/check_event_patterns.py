#!/usr/bin/env python3
"""Check the EventBridge rules of keyturn-stack.yaml against the event fixtures.

    python3 infra/check_event_patterns.py [infra/keyturn-stack.yaml]

Each fixture in tests/fixtures/ (the events intake.rs is tested with) must be
matched by exactly its own rule (on its own bus: rotation requests travel on
the <Prefix>-requests bus, AWS events on the default one), and mutated copies of it (archived, passed,
another control, suppressed, another custom action, another Health event...)
by none. That covers Security Hub CSPM (ASFF: consolidated, FSBP legacy, every
CIS version's legacy finding, the AWS Config rule fallback) and the new
Security Hub (OCSF, "Findings Imported V2": failed, passed, suppressed,
archived, another control). The AWS events of an account keyturn does not
serve (neither this one nor MemberAccountIds, set here to MEMBER) match
nothing. Where the pattern cannot tell (EventBridge
matches array fields per field, not per finding; a CIS number is not checked
against its version here) intake.rs decides; those cases are not listed.

The matcher below is a local approximation of EventBridge's documented
semantics (exact values, prefix, suffix, equals-ignore-case, anything-but,
exists, $or at any level; an array in the event matches if any element
does). It catches wrong field names, values and structure; it is not
EventBridge itself. The authoritative check, with credentials:

    aws events test-event-pattern --event-pattern "$PATTERN" --event file://tests/fixtures/X.json
"""

import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_policy  # noqa: E402  (shared CloudFormation loader and resolver)

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")
MISSING = object()
# MemberAccountIds for this check: events of this account must match too.
MEMBER = "210987654321"
FOREIGN = "999999999999"


def values_at(node, path):
    """All leaf values at a dotted path, descending into arrays."""
    if not path:
        if isinstance(node, list):
            return [v for item in node for v in values_at(item, path)]
        return [node]
    if isinstance(node, list):
        return [v for item in node for v in values_at(item, path)]
    if not isinstance(node, dict) or path[0] not in node:
        return []
    return values_at(node[path[0]], path[1:])


def filter_matches(flt, values):
    if isinstance(flt, dict):
        (op, arg), = flt.items()
        if op == "exists":
            return bool(values) == bool(arg)
        if op == "prefix":
            return any(isinstance(v, str) and v.startswith(arg) for v in values)
        if op == "suffix":
            return any(isinstance(v, str) and v.endswith(arg) for v in values)
        if op == "equals-ignore-case":
            return any(isinstance(v, str) and v.lower() == arg.lower() for v in values)
        if op == "anything-but":
            banned = arg if isinstance(arg, list) else [arg]
            return any(v not in banned for v in values)
        raise ValueError(f"filter {op} not supported by this checker")
    return flt in values


def matches(pattern, event, path=()):
    for key, sub in pattern.items():
        if key == "$or":
            if not any(matches(branch, event, path) for branch in sub):
                return False
        elif isinstance(sub, dict):
            if not matches(sub, event, path + (key,)):
                return False
        else:
            values = values_at(event, list(path + (key,)))
            if not any(filter_matches(f, values) for f in sub):
                return False
    return True


def load_rules(template_path, region, account):
    """{logical id: (bus name, pattern)}"""
    check_policy.REGION, check_policy.ACCOUNT = region, account
    template = check_policy.load_template(template_path)
    resolver = check_policy.Resolver(template, {"MemberAccountIds": MEMBER})
    rules = {}
    for logical, res in template["Resources"].items():
        if res["Type"] == "AWS::Events::Rule" and "EventPattern" in res["Properties"]:
            bus = resolver.resolve(res["Properties"].get("EventBusName", "default"))
            rules[logical] = (bus, resolver.resolve(res["Properties"]["EventPattern"]))
    return rules


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


def mutate(event, fn):
    e = copy.deepcopy(event)
    fn(e)
    return e


def finding_set(**fields):
    """Set fields of every finding (`a__b` is a.b); None sets JSON null."""
    return _edit(fields, remove_none=False)


def finding_edit(**fields):
    """Like finding_set; a value None removes the field."""
    return _edit(fields, remove_none=True)


def _edit(fields, remove_none):
    def fn(e):
        for f in e["detail"]["findings"]:
            for dotted, value in fields.items():
                node = f
                *parents, last = dotted.split("__")
                for p in parents:
                    node = node.setdefault(p, {})
                if value is None and remove_none:
                    node.pop(last, None)
                else:
                    node[last] = value
    return fn


CIS_VERSIONS = ("1.2.0", "1.4.0", "3.0.0", "5.0.0")


def cases():
    cons = fixture("securityhub-iam3-consolidated.json")
    legacy = fixture("securityhub-iam3-legacy.json")
    action = fixture("securityhub-custom-action.json")
    health = fixture("health-scim-expiry.json")
    yield "consolidated IAM.3", cons, "FindingsImportedRule"
    yield "legacy IAM.3", legacy, "FindingsImportedRule"
    yield "legacy IAM.3 by GeneratorId only", mutate(legacy, finding_set(ProductFields__ControlId="X")), "FindingsImportedRule"
    yield "consolidated, workflow NOTIFIED", mutate(cons, finding_set(Workflow__Status="NOTIFIED")), "FindingsImportedRule"
    yield "consolidated, archived", mutate(cons, finding_set(RecordState="ARCHIVED")), None
    yield "consolidated, passed", mutate(cons, finding_set(Compliance__Status="PASSED")), None
    yield "consolidated, suppressed", mutate(cons, finding_set(Workflow__Status="SUPPRESSED")), None
    yield "consolidated, resolved", mutate(cons, finding_set(Workflow__Status="RESOLVED")), None
    yield "consolidated, IAM.4", mutate(cons, finding_set(Compliance__SecurityControlId="IAM.4",
                                                          GeneratorId="security-control/IAM.4")), None
    yield "legacy, IAM.4", mutate(legacy, finding_set(ProductFields__ControlId="IAM.4",
                                                      GeneratorId="aws-foundational-security-best-practices/v/1.0.0/IAM.4")), None
    yield "legacy, other source", mutate(legacy, lambda e: e.update(source="aws.config")), None
    for version in CIS_VERSIONS:
        cis = fixture(f"securityhub-iam3-cis-{version}.json")
        yield f"CIS v{version} legacy IAM.3", cis, "FindingsImportedRule"
        yield f"CIS v{version}, passed", mutate(cis, finding_set(Compliance__Status="PASSED")), None
        yield f"CIS v{version}, archived", mutate(cis, finding_set(RecordState="ARCHIVED")), None
    cis14 = fixture("securityhub-iam3-cis-1.4.0.json")
    yield "CIS v1.4.0 1.4 (root access key), its own Config rule", mutate(cis14, finding_set(
        GeneratorId="cis-aws-foundations-benchmark/v/1.4.0/1.4", ProductFields__ControlId="1.4",
        **{"ProductFields__RelatedAWSResources:0/name": "securityhub-iam-root-access-key-check-1a2b3c4d"})), None
    yield "CIS v5.0.0 1.14 (another check), its own Config rule", mutate(fixture("securityhub-iam3-cis-5.0.0.json"), finding_set(
        GeneratorId="cis-aws-foundations-benchmark/v/5.0.0/1.14", ProductFields__ControlId="1.14",
        **{"ProductFields__RelatedAWSResources:0/name": "securityhub-iam-user-unused-credentials-check-1a2b3c4d"})), None
    yield "Config rule only", mutate(cis14, finding_edit(GeneratorId="custom/keyturn-test", ProductFields__ControlId=None)), "FindingsImportedRule"
    yield "Config rule, but another control's id", mutate(cis14, finding_edit(GeneratorId="custom/keyturn-test", ProductFields__ControlId="IAM.4")), None
    v2 = fixture("securityhub-v2-iam3-failed.json")
    yield "OCSF IAM.3 failed", v2, "FindingsImportedV2Rule"
    yield "OCSF IAM.3 failed, In Progress (keyturn's own update)", mutate(v2, finding_edit(status="In Progress", status_id=2)), "FindingsImportedV2Rule"
    yield "OCSF IAM.3 failed, no status_id", mutate(v2, finding_edit(status_id=None)), "FindingsImportedV2Rule"
    yield "OCSF IAM.3 failed, caption only, upper case", mutate(v2, finding_edit(compliance__status_id=None, compliance__status="FAIL")), "FindingsImportedV2Rule"
    yield "OCSF IAM.3 passed", fixture("securityhub-v2-iam3-passed.json"), None
    yield "OCSF IAM.3 passed, still open", mutate(fixture("securityhub-v2-iam3-passed.json"), finding_edit(status="New", status_id=1)), None
    yield "OCSF IAM.3 warning", mutate(v2, finding_edit(compliance__status="Warning", compliance__status_id=2)), None
    yield "OCSF IAM.3 suppressed", fixture("securityhub-v2-iam3-suppressed.json"), None
    yield "OCSF IAM.3 archived", fixture("securityhub-v2-iam3-archived.json"), None
    yield "OCSF IAM.3 resolved by keyturn", mutate(v2, finding_edit(status="Resolved", status_id=4)), None
    yield "OCSF another control (IAM.8)", fixture("securityhub-v2-other-control.json"), None
    yield "OCSF finding as CSPM detail-type", mutate(v2, lambda e: e.update({"detail-type": "Security Hub Findings - Imported"})), None
    yield "custom action", action, "CustomActionRule"
    yield "another custom action", mutate(action, lambda e: e.update(
        resources=[e["resources"][0].replace("KeyturnRotate", "Other")])), None
    yield "SCIM token expiry", health, "ScimTokenExpiryRule"
    yield "another Health event", mutate(health, lambda e: e["detail"].update(
        eventTypeCode="AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED")), None
    exposed = fixture("health-key-exposed.json")
    yield "exposed access key", exposed, "KeyExposedRule"
    yield "exposed access key, user ARN form", fixture("health-key-exposed-user-arn.json"), "KeyExposedRule"
    yield "exposure suspected (not handled)", mutate(exposed, lambda e: e["detail"].update(
        eventTypeCode="AWS_RISK_CREDENTIALS_EXPOSURE_SUSPECTED")), None
    yield "exposed key code from another service", mutate(exposed, lambda e: e["detail"].update(service="IAM")), None
    handover = fixture("cloudtrail-handover-put-secret-value.json")
    name = handover["detail"]["requestParameters"]["secretId"].split(":secret:")[1][:-7]
    yield "handover secret: PutSecretValue by ARN (console)", handover, "HandoverSecretChangedRule"
    yield "handover secret: PutSecretValue by name", mutate(handover, lambda e: e["detail"]["requestParameters"].update(
        secretId=name)), "HandoverSecretChangedRule"
    yield "handover secret: UpdateSecret", mutate(handover, lambda e: e["detail"].update(eventName="UpdateSecret")), "HandoverSecretChangedRule"
    yield "handover secret: CreateSecret with a value", mutate(handover, lambda e: e["detail"].update(
        eventName="CreateSecret", requestParameters={"name": name, "secretString": "HIDDEN_DUE_TO_SECURITY_REASONS"})), "HandoverSecretChangedRule"
    yield "handover secret: PutSecretValue refused (AccessDenied)", mutate(handover, lambda e: e["detail"].update(
        errorCode="AccessDenied")), None
    yield "handover secret: read (GetSecretValue)", mutate(handover, lambda e: e["detail"].update(eventName="GetSecretValue")), None
    yield "another secret changed", mutate(handover, lambda e: e["detail"]["requestParameters"].update(
        secretId="arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbC123")), None
    yield "another secret, named like one", mutate(handover, lambda e: e["detail"]["requestParameters"].update(
        secretId="prod/keyturn/handover/x")), None
    yield "handover secret, account keyturn does not serve", mutate(handover, lambda e: e.update(account=FOREIGN)), None
    yield "handover secret, member account (secrets live in the worker's)", mutate(handover, lambda e: e.update(account=MEMBER)), None
    request = {"version": "0", "id": "r1", "source": "keyturn.requests", "detail-type": "Rotation Request",
               "account": exposed["account"], "region": exposed["region"], "time": exposed["time"], "resources": [],
               "detail": json.load(open(os.path.join(FIXTURES, "requests", "valid", "by-rotation-id.json")))}
    yield "rotation request event, request bus", request, "RotationRequestRule", "keyturn-requests"
    yield "rotation request event, default bus (not read)", request, None
    yield "rotation request event from another account, request bus (its policy admits the sender)", \
        mutate(request, lambda e: e.update(account=FOREIGN)), "RotationRequestRule", "keyturn-requests"
    yield "outcome event (keyturn's own)", mutate(request, lambda e: e.update({"source": "keyturn.outcomes", "detail-type": "Rotation Succeeded"})), None
    yield "outcome event (keyturn's own), request bus", mutate(request, lambda e: e.update({"source": "keyturn.outcomes", "detail-type": "Rotation Succeeded"})), None, "keyturn-requests"
    # Only the accounts keyturn serves: this one and MemberAccountIds.
    for name, event, rule in [("consolidated IAM.3", cons, "FindingsImportedRule"),
                              ("OCSF IAM.3 failed", v2, "FindingsImportedV2Rule"),
                              ("custom action", action, "CustomActionRule"),
                              ("SCIM token expiry", health, "ScimTokenExpiryRule"),
                              ("exposed access key", exposed, "KeyExposedRule")]:
        yield f"{name}, member account", mutate(event, lambda e: e.update(account=MEMBER)), rule
        yield f"{name}, account keyturn does not serve", mutate(event, lambda e: e.update(account=FOREIGN)), None
        yield f"{name}, on the request bus", event, None, "keyturn-requests"


def main(argv):
    template_path = argv[1] if len(argv) > 1 else os.path.join(HERE, "keyturn-stack.yaml")
    sample = fixture("securityhub-custom-action.json")
    rules = load_rules(template_path, sample["region"], sample["account"])
    print("rules:", ", ".join(sorted(rules)))
    bad = 0
    for case in cases():
        name, event, expected, bus = (*case, "default")[:4]
        hits = sorted(r for r, (b, p) in rules.items() if b == bus and matches(p, event))
        want = [expected] if expected else []
        ok = hits == want
        bad += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: matched {hits or 'nothing'}")
    print("OK" if not bad else f"{bad} case(s) failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
