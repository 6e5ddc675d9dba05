//! keyturn's test harness: a `moto_server` per test, a faithful fake Auth0,
//! resource setup, log capture and queue wrappers. Used by the integration
//! tests in `tests/tests/` and by the `keyturn-local` end-to-end run.

pub mod auth0_fake;
pub mod capture;
pub mod env;
pub mod fault_proxy;
pub mod fleet;
pub mod github_fake;
pub mod graph_fake;
pub mod moto;
pub mod process;
pub mod recording;
pub mod securityhub_fake;
pub mod tcp_proxy;
