//! The built-in key sources, one file per backend.

#[cfg(feature = "vault")]
pub mod vault;
