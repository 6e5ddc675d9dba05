//! Metrics the AWS way: CloudWatch Embedded Metric Format (EMF) lines on
//! stdout. CloudWatch Logs (the ECS `awslogs` driver, Lambda) turns each
//! line into metrics; keyturn makes no `PutMetricData` call.
//!
//! Every metric goes to namespace `keyturn` twice: with its dimensions
//! (e.g. `RotationId`, `TargetKind`, `Trigger`) and with none, so an alarm
//! can watch the whole deployment without knowing the rotation ids.
//!
//! | metric | unit | dimensions | when |
//! |---|---|---|---|
//! | `SagaStarted` | Count | RotationId, TargetKind, Trigger | a worker ran a saga's first step |
//! | `SagaSucceeded`, `SagaFailed`, `SagaNeedsAttention`, `SagaRolledBack` | Count | RotationId, TargetKind, Trigger | a saga ended (failed = compensated or refused) |
//! | `StepDuration` | Milliseconds | RotationId, Step | a step attempt ran |
//! | `StepRetries` | Count | RotationId, Step | a step attempt failed and will be retried |
//! | `OldestRunningSagaAge`, `OldestKeyUnderRotationAge` | Seconds | — | each sweep |
//! | `WorkerHeartbeat` | Count | — | each sweep (the alarm fires when it is missing) |
//!
//! The rendering is pure ([`line`]); [`emit`] writes one line to stdout.
//! Only `keyturn worker` and `keyturn lambda` emit: the one-shot commands'
//! stdout belongs to whoever ran them. A `finalize` that is retried after a
//! crash can count an outcome twice (at least once, never zero times).

use std::io::Write;

use serde_json::{json, Map, Value};

/// CloudWatch namespace of every keyturn metric.
pub const NAMESPACE: &str = "keyturn";

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub value: f64,
}

/// An EMF document: one or more metrics sharing a set of dimensions, which
/// are published both with those dimensions and with none.
pub fn line(timestamp_ms: u64, dimensions: &[(&str, &str)], metrics: &[Metric<'_>]) -> String {
    let mut doc = Map::new();
    let dim_names: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    let sets: Vec<Vec<&str>> = if dim_names.is_empty() { vec![vec![]] } else { vec![dim_names, vec![]] };
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": sets,
                "Metrics": metrics.iter().map(|m| json!({"Name": m.name, "Unit": m.unit})).collect::<Vec<_>>(),
            }]
        }),
    );
    for (k, v) in dimensions {
        doc.insert((*k).into(), Value::String((*v).into()));
    }
    for m in metrics {
        doc.insert(m.name.into(), json!(m.value));
    }
    Value::Object(doc).to_string()
}

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turn EMF output off for this process (the in-process test harness; the
/// binary always emits).
pub fn disable() {
    ENABLED.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// Write one EMF line to stdout (best effort: metrics never fail a step).
pub fn emit(dimensions: &[(&str, &str)], metrics: &[Metric<'_>]) {
    if !ENABLED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    // The EMF timestamp is when the line is written: the wall clock.
    let l = line(crate::clock::Clock::now_ms(&crate::clock::SystemClock), dimensions, metrics);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{l}");
}

/// The metric for a saga's end status.
pub fn outcome_metric(status: crate::saga::Status) -> Option<&'static str> {
    use crate::saga::Status::*;
    match status {
        Succeeded => Some("SagaSucceeded"),
        Compensated | Refused => Some("SagaFailed"),
        NeedsAttention => Some("SagaNeedsAttention"),
        RolledBack => Some("SagaRolledBack"),
        Running | Compensating => None,
    }
}

/// The trigger as a low-cardinality dimension value: `manual`,
/// `securityhub:imported`, `schedule`, … (the part before any detail).
pub fn trigger_dimension(trigger: &str) -> &str {
    match trigger.split_once(':') {
        Some(("securityhub", rest)) => {
            if rest.starts_with("custom_action") {
                "securityhub:custom_action"
            } else {
                "securityhub:imported"
            }
        }
        Some((head, _)) => head,
        None => trigger,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The EMF specification's required shape: `_aws.Timestamp` (ms),
    /// `CloudWatchMetrics[].Namespace`, `Dimensions` (arrays of dimension
    /// names, each a root member), `Metrics[].Name` (each a root member
    /// holding a number) and `Unit`.
    fn assert_valid_emf(l: &str) -> Value {
        let v: Value = serde_json::from_str(l).unwrap();
        let aws = &v["_aws"];
        assert!(aws["Timestamp"].as_u64().is_some());
        for d in aws["CloudWatchMetrics"].as_array().unwrap() {
            assert_eq!(d["Namespace"], NAMESPACE);
            for set in d["Dimensions"].as_array().unwrap() {
                assert!(set.as_array().unwrap().len() <= 30);
                for name in set.as_array().unwrap() {
                    assert!(v[name.as_str().unwrap()].is_string(), "dimension {name} is a root string member");
                }
            }
            for m in d["Metrics"].as_array().unwrap() {
                assert!(v[m["Name"].as_str().unwrap()].is_number());
                assert!(m["Unit"].is_string());
            }
        }
        v
    }

    #[test]
    fn lines_are_valid_emf_with_and_without_dimensions() {
        let l = line(
            1_700_000_000_000,
            &[("RotationId", "auth0-ses"), ("TargetKind", "t"), ("Trigger", "manual")],
            &[Metric { name: "SagaSucceeded", unit: "Count", value: 1.0 }],
        );
        assert!(!l.contains('\n'));
        let v = assert_valid_emf(&l);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["RotationId", "TargetKind", "Trigger"], []]));
        assert_eq!(v["SagaSucceeded"], 1.0);
        let hb = line(
            1,
            &[],
            &[Metric { name: "WorkerHeartbeat", unit: "Count", value: 1.0 }, Metric { name: "OldestRunningSagaAge", unit: "Seconds", value: 12.5 }],
        );
        let v = assert_valid_emf(&hb);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
    }

    #[test]
    fn triggers_are_low_cardinality() {
        assert_eq!(trigger_dimension("manual"), "manual");
        assert_eq!(trigger_dimension("securityhub:imported"), "securityhub:imported");
        assert_eq!(trigger_dimension("securityhub:custom_action:Rotate with keyturn"), "securityhub:custom_action");
        assert_eq!(trigger_dimension("schedule:max_age 80.0d"), "schedule");
        assert_eq!(trigger_dimension("health:scim_expiry"), "health");
    }
}
