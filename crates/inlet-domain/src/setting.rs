//! [`InvalidSetting`]: the one error every Inlet crate's settings
//! `validate()` returns, naming the dotted configuration key at fault.

/// A setting that cannot work, naming its dotted key (e.g.
/// `api.max_body_bytes`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` {message}")]
pub struct InvalidSetting {
    /// Dotted key, as spelled in the configuration files.
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

impl InvalidSetting {
    /// The error for `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> InvalidSetting {
        InvalidSetting {
            key: key.into(),
            message: message.into(),
        }
    }

    /// `Err` of [`InvalidSetting::new`], for `return invalid(…)` in a
    /// `validate()`.
    pub fn err<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, InvalidSetting> {
        Err(InvalidSetting::new(key, message))
    }
}
