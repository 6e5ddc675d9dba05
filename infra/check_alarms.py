#!/usr/bin/env python3
"""Structural check of keyturn's own alarms in the stack template.

    python3 infra/check_alarms.py infra/keyturn-stack.yaml

Checks that the stack alarms, on the notification topic, on:
  * either dead-letter queue not empty (AWS/SQS ApproximateNumberOfMessagesVisible > 0),
  * the oldest step message too old (AWS/SQS ApproximateAgeOfOldestMessage),
  * a saga needing attention (keyturn SagaNeedsAttention > 0),
  * the worker's heartbeat missing for three periods (keyturn WorkerHeartbeat,
    missing data = breaching);
that the topic is encrypted with a key CloudWatch may use (alarms cannot
publish to a topic under the AWS managed aws/sns key); that a dashboard
exists; and that every keyturn metric the alarms and the dashboard name is
one the worker emits (worker/src/metrics.rs). Then it removes the heartbeat
alarm from a copy and checks that the check fails, so it can fail.

Exit status: 0 clean, 1 findings.
"""

import copy
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_policy import load_template  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def emitted_metrics():
    """Metric names the worker's code emits: `Metric { name: "…" }` and the outcome names."""
    names = set()
    for d, _, files in os.walk(os.path.join(ROOT, "worker", "src")):
        for f in files:
            if f.endswith(".rs"):
                src = open(os.path.join(d, f)).read()
                names |= set(re.findall(r'Metric \{ name: "([A-Za-z]+)"', src))
                names |= set(re.findall(r'Some\("(Saga[A-Za-z]+)"\)', src))
    return names


def ref(v):
    if isinstance(v, dict):
        return v.get("Ref") or (v.get("Fn::GetAtt") or [None])[0] if ("Ref" in v or "Fn::GetAtt" in v) else None
    return None


def check(t):
    problems = []
    res = t.get("Resources", {})
    alarms = {k: r["Properties"] for k, r in res.items() if r.get("Type") == "AWS::CloudWatch::Alarm"}
    emitted = emitted_metrics()

    def find(pred, what):
        hits = [(k, p) for k, p in alarms.items() if pred(p)]
        if not hits:
            problems.append(f"no alarm for {what}")
        return hits

    def dim_queue(p):
        d = p.get("Dimensions") or []
        return ref(d[0]["Value"]) if d and d[0].get("Name") == "QueueName" else None

    for q in ("StepDeadLetterQueue", "IntakeDeadLetterQueue"):
        for _, p in find(lambda p, q=q: p.get("MetricName") == "ApproximateNumberOfMessagesVisible" and dim_queue(p) == q, f"{q} not empty"):
            if not (p.get("Threshold") == 0 and p.get("ComparisonOperator") == "GreaterThanThreshold"):
                problems.append(f"{q} alarm must fire on > 0")
    find(lambda p: p.get("MetricName") == "ApproximateAgeOfOldestMessage" and dim_queue(p) == "StepQueue", "the oldest step message")
    for _, p in find(lambda p: p.get("Namespace") == "keyturn" and p.get("MetricName") == "SagaNeedsAttention", "a saga needing attention"):
        if p.get("ComparisonOperator") != "GreaterThanThreshold" or p.get("Threshold") != 0:
            problems.append("needs-attention alarm must fire on > 0")
    for _, p in find(lambda p: p.get("Namespace") == "keyturn" and p.get("MetricName") == "WorkerHeartbeat", "a missing worker heartbeat"):
        if p.get("TreatMissingData") != "breaching" or p.get("EvaluationPeriods") != 3 or p.get("ComparisonOperator") != "LessThanThreshold":
            problems.append("heartbeat alarm: missing data must breach, over three periods, below the threshold")
    for k, p in alarms.items():
        if not any(ref(a) == "Topic" for a in p.get("AlarmActions") or []):
            problems.append(f"{k} does not notify the topic")
        if p.get("Namespace") == "keyturn" and p.get("MetricName") not in emitted:
            problems.append(f"{k} watches {p.get('MetricName')}, which the worker does not emit")
    topic = res.get("Topic", {}).get("Properties", {})
    key = ref(topic.get("KmsMasterKeyId"))
    if not key or key not in res:
        problems.append("the topic must use a customer managed key of this stack (CloudWatch cannot use aws/sns)")
    else:
        stmts = res[key]["Properties"]["KeyPolicy"]["Statement"]
        if not any((s.get("Principal") or {}).get("Service") == "cloudwatch.amazonaws.com" and s.get("Effect") == "Allow" for s in stmts):
            problems.append(f"{key} does not let cloudwatch.amazonaws.com use it")
    dashboards = [r for r in res.values() if r.get("Type") == "AWS::CloudWatch::Dashboard"]
    if not dashboards:
        problems.append("no dashboard")
    for d in dashboards:
        body = d["Properties"]["DashboardBody"]
        body = body.get("Fn::Sub", body) if isinstance(body, dict) else body
        for m in re.findall(r'\["keyturn", "([A-Za-z]+)"', str(body)):
            if m not in emitted:
                problems.append(f"dashboard shows {m}, which the worker does not emit")
    return problems


def main(argv):
    t = load_template(argv[1])
    problems = check(t)
    broken = copy.deepcopy(t)
    del broken["Resources"]["WorkerHeartbeatAlarm"]
    if not check(broken):
        problems.append("self-test: removing the heartbeat alarm was not noticed")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    alarms = sum(1 for r in t["Resources"].values() if r.get("Type") == "AWS::CloudWatch::Alarm")
    print(f"OK: {alarms} alarms on the topic, dashboard present, metrics match worker/src/metrics.rs (self-test: a missing alarm is caught)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
