//! Names that cross the wire end up as arguments of IIS tools (appcmd) on
//! the server. Both sides check them with the same rules; the agent checks
//! again before any command runs.

/// Longest pool or site name accepted.
pub const MAX_NAME_LEN: usize = 64;
/// Longest operation id: `{run}.{node}.{step}` with a node name of up to
/// 128 characters.
pub const MAX_OPERATION_ID_LEN: usize = 200;

/// IIS application pool names: not empty, at most 64 characters, no
/// quotes, control characters, path separators or shell/appcmd
/// metacharacters.
pub fn check_pool_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    if name.trim() != name {
        return Err("must not start or end with spaces".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| c.is_control() || "\"'/\\|&<>*?:;%`$^".contains(*c))
    {
        return Err(format!("contains the character {bad:?}"));
    }
    if name.contains("..") {
        return Err("must not contain `..`".into());
    }
    Ok(())
}

/// Operation ids: 1-200 characters of `[A-Za-z0-9._:-]`.
pub fn check_operation_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("an operation id is required".into());
    }
    if id.len() > MAX_OPERATION_ID_LEN {
        return Err(format!(
            "operation id is longer than {MAX_OPERATION_ID_LEN} characters"
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    {
        return Err("operation id may only contain letters, digits, `.`, `_`, `:` and `-`".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
