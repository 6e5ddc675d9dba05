//! keyturn: credential rotation as durable, idempotent sagas on SQS + DynamoDB.
//!
//! Start with `ARCHITECTURE.md` for the bird's-eye view. Module map:
//! * [`saga`]: the pure state machine (no I/O) — steps, transitions, the compensation rule;
//! * [`engine`]: the `Engine`, composed of the jobs below, and the step pipeline (`Steps`);
//! * [`shared`]: what the engine's jobs share (table, queues and lanes, rotations, timings);
//! * [`commands`]: requests, rollback, release, a person's `provide`/`confirm`;
//! * [`finalize`]: the outcome notice, findings, quarantine counting, prompts to a person;
//! * [`sweeper`]: re-drives sagas whose message was lost, runs due evidence checks;
//! * [`attention`]: sagas stopped with both keys in place: evidence and `resolve`;
//! * [`worker`]: long polling, concurrency, sweeper, shutdown;
//! * [`store`], [`queue`], [`seal`], [`notify`], [`secrets`]: the AWS edges;
//! * [`connectors`]: credential sources and targets (IAM access key, Auth0);
//! * [`doctor`]: `keyturn doctor`, the preflight of the environment and every rotation;
//! * [`init`]: `keyturn init`, the resources keyturn needs without the stack;
//! * [`config`], [`cli`], [`app`]: configuration and the command line.
//! * [`clock`]: time (the `Clock`, `Millis`, `Dur`); [`preflight`]: what a check finds.
//!
//! Modules import only from lower floors (ARCHITECTURE.md, "Floors"); the
//! table and its test are in `layers.rs`.

pub mod accounts;
pub mod aimd;
pub mod app;
pub mod attention;
pub mod aws;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod config_source;
pub mod connectors;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod finalize;
pub mod handover;
pub mod init;
pub mod intake;
pub mod lambda;
#[cfg(test)]
mod layers;
pub mod metrics;
pub mod notify;
pub mod preflight;
pub mod quarantine;
pub mod queue;
pub mod report;
pub mod requests;
pub mod saga;
pub mod seal;
pub mod secrets;
pub mod securityhub;
pub mod shared;
pub mod store;
pub mod sweeper;
pub mod triggers;
pub mod worker;
