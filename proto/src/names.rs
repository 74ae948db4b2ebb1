//! Names that cross the wire end up as arguments of IIS tools (appcmd) on
//! the server. Both sides check them with the same rules; the agent checks
//! again before any command runs.

/// Longest pool or site name accepted.
pub const MAX_NAME_LEN: usize = 64;
/// Longest operation id: `{run}.{node}.{step}` with a node name of up to
/// 128 characters.
pub const MAX_OPERATION_ID_LEN: usize = 200;

/// Windows' reserved device names: a file or folder named so (with any
/// extension: `NUL.json` too) is the device, not a file.
const DEVICE_NAMES: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Why a name is refused. The messages name the rule broken; callers add
/// which name and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("must not start or end with spaces")]
    Spaces,
    #[error("contains the character {0:?}")]
    Character(char),
    #[error("must not contain `..`")]
    DotDot,
    #[error("`{0}` is a Windows device name")]
    DeviceName(String),
    #[error("must not end with a dot or a space (Windows drops them from file names)")]
    TrailingDot,
    #[error("a version is 1-{MAX_NAME_LEN} characters")]
    VersionLength,
    #[error("version `{0}` must start with a letter or digit")]
    VersionStart(String),
    #[error("version `{0}` contains {1:?}; only letters, digits and `._+-` are allowed")]
    VersionCharacter(String, char),
    #[error("version `{0}` must not contain `..`")]
    VersionDotDot(String),
    #[error("version `{0}`: {1}")]
    VersionFile(String, Box<NameError>),
    #[error("an operation id is required")]
    NoOperationId,
    #[error("operation id is longer than {MAX_OPERATION_ID_LEN} characters")]
    OperationIdTooLong,
    #[error("operation id may only contain letters, digits, `.`, `_`, `:` and `-`")]
    OperationIdCharacters,
    #[error("operation id {0}")]
    OperationIdFile(Box<NameError>),
}

/// Why `name` cannot name a file on Windows (it does name one on the
/// node: a folder, an operation record), if it cannot.
fn windows_file_name(name: &str) -> Result<(), NameError> {
    let base = name.split('.').next().unwrap_or(name).trim_end();
    if DEVICE_NAMES.iter().any(|d| d.eq_ignore_ascii_case(base)) {
        return Err(NameError::DeviceName(base.escape_debug().to_string()));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err(NameError::TrailingDot);
    }
    Ok(())
}

/// IIS application pool names: not empty, at most 64 characters, no
/// quotes, control characters, path separators or shell/appcmd
/// metacharacters.
pub fn check_pool_name(name: &str) -> Result<(), NameError> {
    if name.trim().is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name.trim() != name {
        return Err(NameError::Spaces);
    }
    if let Some(bad) = name
        .chars()
        .find(|c| c.is_control() || "\"'/\\|&<>*?:;%`$^".contains(*c))
    {
        return Err(NameError::Character(bad));
    }
    if name.contains("..") {
        return Err(NameError::DotDot);
    }
    windows_file_name(name)
}

/// IIS site names follow the same rules as pool names (they become appcmd
/// arguments and folder names under the releases root).
pub fn check_site_name(name: &str) -> Result<(), NameError> {
    check_pool_name(name)
}

/// Release versions name folders on the node: 1-64 characters of
/// `[A-Za-z0-9._+-]`, starting with a letter or digit (no `.`, `..`).
pub fn check_version(version: &str) -> Result<(), NameError> {
    if version.is_empty() || version.len() > MAX_NAME_LEN {
        return Err(NameError::VersionLength);
    }
    let shown = || version.escape_debug().to_string();
    if !version.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(NameError::VersionStart(shown()));
    }
    if let Some(bad) = version
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._+-".contains(*c)))
    {
        return Err(NameError::VersionCharacter(shown(), bad));
    }
    if version.contains("..") {
        return Err(NameError::VersionDotDot(version.to_string()));
    }
    windows_file_name(version).map_err(|e| NameError::VersionFile(version.to_string(), Box::new(e)))
}

/// Operation ids: 1-200 characters of `[A-Za-z0-9._:-]`.
pub fn check_operation_id(id: &str) -> Result<(), NameError> {
    if id.is_empty() {
        return Err(NameError::NoOperationId);
    }
    if id.len() > MAX_OPERATION_ID_LEN {
        return Err(NameError::OperationIdTooLong);
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    {
        return Err(NameError::OperationIdCharacters);
    }
    windows_file_name(id).map_err(|e| NameError::OperationIdFile(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_windows_cannot_store_are_refused() {
        for bad in ["CON", "nul", "NUL.json", "com1.x", "LPT9", "r1.", "Shop "] {
            assert!(
                check_operation_id(bad).is_err() || bad.ends_with(' '),
                "{bad}"
            );
            assert!(check_pool_name(bad).is_err(), "{bad}");
        }
        for ok in ["r1.web01.drain", "CONSOLE", "console-pool", "NULL", "COM10"] {
            assert!(check_operation_id(ok).is_ok(), "{ok}");
            assert!(check_pool_name(ok).is_ok(), "{ok}");
        }
        assert!(check_version("CON").is_err());
    }

    #[test]
    fn versions() {
        for ok in ["1.0.0", "2.4.1-rc.1", "20261121+build7", "v3"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "..\\x",
            "a/b",
            "a\\b",
            "C:x",
            ".hidden",
            "1..2",
            "x y",
            &"9".repeat(65),
        ] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pool_names() {
        for ok in ["DefaultAppPool", "Classic .NET AppPool", "shop-pool_2"] {
            assert!(check_pool_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "a\"b",
            "a&b",
            "a|b",
            "a\nb",
            "..\\x",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(check_pool_name(bad).is_err(), "{bad:?}");
        }
    }
}
