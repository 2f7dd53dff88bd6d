//! The built-in key sources, one file per backend.
