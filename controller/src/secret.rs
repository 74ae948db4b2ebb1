//! Secrets named in the inventory (an environment variable or a file), read
//! when a driver is built and kept in a type that never prints them.
use std::fmt;

use farm_inventory::Secret;

farm_proto::message_error! {
    /// Why a secret (password, webhook URL) cannot be read; never its value.
    SecretError
}

/// A secret value: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn from_owned(value: String) -> Password {
        Password(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Most a secret file may hold: a password, not a document.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Reads `secret`. The error names where it looked, never what it found.
pub fn read(secret: &Secret) -> Result<Password, SecretError> {
    let value = match secret {
        Secret::Env(var) => std::env::var(var).map_err(|e| match e {
            std::env::VarError::NotPresent => format!("environment variable {var} is not set"),
            std::env::VarError::NotUnicode(_) => {
                format!("environment variable {var} is not valid UTF-8")
            }
        })?,
        Secret::File(path) => {
            let shown = path.display();
            let meta = std::fs::metadata(path)
                .map_err(|e| SecretError(format!("could not read the secret file {shown}: {e}")))?;
            if meta.len() > MAX_SECRET_FILE {
                return Err(SecretError(format!(
                    "the secret file {shown} is larger than 64 KiB"
                )));
            }
            std::fs::read_to_string(path)
                .map_err(|e| SecretError(format!("could not read the secret file {shown}: {e}")))?
        }
    };
    // A file written by `echo` ends in a newline that is not part of it.
    let value = value.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        return Err(SecretError(match secret {
            Secret::Env(var) => format!("environment variable {var} is empty"),
            Secret::File(path) => format!("the secret file {} is empty", path.display()),
        }));
    }
    Ok(Password(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let p = Password("hunter2".into());
        assert_eq!(format!("{p} {p:?}"), "*** ***");
    }

    #[test]
    fn from_a_file_without_its_newline_and_errors_name_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(read(&Secret::File(f.clone())).unwrap().expose(), "s3cret");
        std::fs::write(&f, "\n").unwrap();
        assert!(read(&Secret::File(f))
            .unwrap_err()
            .to_string()
            .contains("is empty"));
        let e = read(&Secret::Env("FARMCTL_TEST_SURELY_UNSET_VAR".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FARMCTL_TEST_SURELY_UNSET_VAR is not set"),
            "{e}"
        );
    }
}
