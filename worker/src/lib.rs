pub mod error;
pub mod saga;
