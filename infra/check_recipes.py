#!/usr/bin/env python3
"""Check the recipes in infra/recipes/ against keyturn's documented outcome events.

    python3 infra/check_recipes.py

For tickets-and-pages.yaml:
- every `detail-type` a rule names is one keyturn emits (the table in
  docs/requests.md "Outcome events on EventBridge"), so a typo cannot leave a
  pager silent;
- each documented event kind reaches exactly the destination docs/operators.md
  promises (page, ticket or nothing), matched with the same local
  approximation of EventBridge's pattern semantics as check_event_patterns.py;
- every input transformer names only paths it maps, puts only id-like paths
  (event, rotation_id, saga_id: no quote or backslash by construction) inside
  quotes, and renders to valid JSON with a sample outcome document holding
  quotes and backslashes in its free text.
cfn-lint checks the templates themselves (.ci/run).
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_event_patterns as cep  # noqa: E402
import check_policy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")

# docs/operators.md "Tickets and pages": where each event kind goes.
ROUTING = {
    "Rotation Exposed Key": "PageRule",
    "Rotation Needs Attention": "PageRule",
    "Rotation Failed": "PageRule",
    "Rotation Action Required": "TicketRule",
    "Rotation Reminder": "TicketRule",
    "Rotation Quarantined": "TicketRule",
    "Rotation Disabled": "TicketRule",
    "Rotation Unmatched": "TicketRule",
    "Rotation Request Rejected": "TicketRule",
    "Keyturn Config Rejected": "TicketRule",
}


def documented_detail_types():
    """The detail-types in the table of docs/requests.md."""
    with open(os.path.join(ROOT, "docs", "requests.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Outcome events on EventBridge", 1)[1].split("\n## ", 1)[0]
    kinds = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[1].startswith("`") and cells[1] != "`detail-type`":
            kinds.update(re.findall(r"`([^`]+)`", cells[1]))
    return kinds


ID_PATHS = {"$.detail.event", "$.detail.rotation_id", "$.detail.saga_id"}


def render(template, paths):
    """Fill an InputTemplate as EventBridge does: a string path's value as
    is, an object path's value as JSON."""
    def repl(m):
        name = m.group(1)
        if name not in paths:
            raise KeyError(f"<{name}> is not in InputPathsMap")
        if paths[name] == "$.detail":
            return json.dumps({"event": "rotation.failed", "recommended_action": 'say "yes" \\ then run it'})
        if paths[name] not in ID_PATHS:
            raise KeyError(f"<{name}> ({paths[name]}) is free text; keep it inside the document")
        return "sample-" + name
    return re.sub(r"<([A-Za-z0-9_.-]+)>", repl, template)


def main():
    path = os.path.join(HERE, "recipes", "tickets-and-pages.yaml")
    rules = cep.load_rules(path, "eu-west-1", "123456789012")
    template = check_policy.load_template(path)
    documented = documented_detail_types()
    bad = 0

    def check(ok, what):
        nonlocal bad
        bad += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")

    check(len(documented) >= 14, f"docs/requests.md lists {len(documented)} detail-types")
    for logical, (_bus, pattern) in sorted(rules.items()):
        for dt in pattern.get("detail-type", []):
            check(dt in documented, f"{logical}: {dt!r} is a documented detail-type")
    for dt in sorted(documented):
        event = {"source": "keyturn.outcomes", "detail-type": dt, "detail": {"event": dt}}
        hits = sorted(r for r, (_b, p) in rules.items() if cep.matches(p, event))
        want = [ROUTING[dt]] if dt in ROUTING else []
        check(hits == want, f"{dt}: goes to {hits or 'nothing'}")
    for dt in ("Rotation Failed", "Rotation Reminder"):
        foreign = {"source": "someone.else", "detail-type": dt, "detail": {}}
        check(not any(cep.matches(p, foreign) for _b, p in rules.values()), f"{dt} from another source: nothing")
    for logical, res in template["Resources"].items():
        if res["Type"] != "AWS::Events::Rule":
            continue
        for target in res["Properties"].get("Targets", []):
            it = target.get("InputTransformer")
            if not it:
                continue
            try:
                json.loads(render(it["InputTemplate"], it["InputPathsMap"]))
                check(True, f"{logical}/{target['Id']}: input template renders to JSON")
            except (KeyError, ValueError) as e:
                check(False, f"{logical}/{target['Id']}: input template: {e}")
    print("OK" if not bad else f"{bad} check(s) failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
