//! [`Environment`]: where sources and settings read environment variables.
//!
//! Production code reads the process environment. Tests and embedding applications can hand in
//! a map instead, so nothing has to mutate the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// A set of environment variables: the process's own, or a fixed map.
///
/// `Debug` prints variable names only, because values may be keys.
#[derive(Clone, Default)]
pub struct Environment {
    map: Option<Arc<BTreeMap<String, Zeroizing<String>>>>,
}

/// A variable that is set but whose value is not valid Unicode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {name} is not valid Unicode")]
pub struct NotUnicode {
    /// Name of the variable.
    pub name: String,
}

impl Environment {
    /// Returns the process environment, read at each lookup.
    pub fn process() -> Environment {
        Environment { map: None }
    }

    /// Creates a fixed set of variables. The process environment is not consulted.
    pub fn from_pairs<I, K, V>(pairs: I) -> Environment
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map = pairs
            .into_iter()
            .map(|(name, value)| (name.into(), Zeroizing::new(value.into())))
            .collect();
        Environment {
            map: Some(Arc::new(map)),
        }
    }

    /// Returns the value of `name`, or `None` when it is not set.
    ///
    /// # Errors
    ///
    /// [`NotUnicode`] when the process variable is set to bytes that are not valid Unicode.
    /// The error carries the name only.
    pub fn var(&self, name: &str) -> Result<Option<Zeroizing<String>>, NotUnicode> {
        match &self.map {
            Some(map) => Ok(map.get(name).cloned()),
            None => match std::env::var_os(name) {
                None => Ok(None),
                // Security: into_string returns the OsString on failure; it is dropped
                // unprinted.
                Some(value) => value
                    .into_string()
                    .map(|v| Some(Zeroizing::new(v)))
                    .map_err(|_| NotUnicode {
                        name: name.to_owned(),
                    }),
            },
        }
    }

    /// Returns every variable whose name starts with `prefix`, skipping values that are not
    /// valid Unicode.
    pub fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, Zeroizing<String>)> {
        match &self.map {
            Some(map) => map
                .iter()
                .filter(|(name, _)| name.starts_with(prefix))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            None => std::env::vars_os()
                .filter_map(|(name, value)| {
                    let name = name.into_string().ok()?;
                    if !name.starts_with(prefix) {
                        return None;
                    }
                    Some((name, Zeroizing::new(value.into_string().ok()?)))
                })
                .collect(),
        }
    }

    /// Returns whether this is the process environment.
    pub fn is_process(&self) -> bool {
        self.map.is_none()
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.map {
            None => f.write_str("Environment::Process"),
            Some(map) => f
                .debug_tuple("Environment::Map")
                .field(&map.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}
