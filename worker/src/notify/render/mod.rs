//! The renderers, one file per family of notices. Each is pure: a saga (or
//! the facts of a notice about no saga) in, a [`super::Notification`] out.

mod config;
mod evidence;
mod exposure;
mod outcome;
mod prompt;
mod quarantine;
mod request;
mod unmatched;

pub use config::*;
pub use evidence::*;
pub use exposure::*;
pub use outcome::*;
pub use prompt::*;
pub use quarantine::*;
pub use request::*;
pub use unmatched::*;
