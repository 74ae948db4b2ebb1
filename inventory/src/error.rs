//! Inventory errors: each names the place in the file it is about.
use std::fmt;

/// One problem in an inventory, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryError {
    /// Field path such as `nodes[3].address`; empty for the whole document.
    pub path: String,
    /// 1-based line and column, when the YAML parser knows them.
    pub line_col: Option<(usize, usize)>,
    pub message: String,
}

impl InventoryError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line_col: None,
            message: message.into(),
        }
    }

    /// serde_yaml already writes the field path into its message
    /// (`nodes[1]: unknown field ...`); split it off so it is reported the same
    /// way as validation errors, and strip the trailing "at line X column Y".
    pub fn from_yaml(e: &serde_yaml::Error) -> Self {
        let line_col = e.location().map(|l| (l.line(), l.column()));
        let mut text = e.to_string();
        if let Some(idx) = text.rfind(" at line ") {
            text.truncate(idx);
        }
        let (path, message) = match text.split_once(": ") {
            Some((p, m)) if looks_like_path(p) => (p.to_string(), m.to_string()),
            _ => (String::new(), text),
        };
        Self {
            path,
            line_col,
            message,
        }
    }
}

fn looks_like_path(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(' ')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.[]-".contains(c))
}

impl fmt::Display for InventoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.line_col {
            write!(f, "line {line} column {col}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why an inventory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("could not read inventory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "inventory {path} is {size} bytes; the limit is {} bytes",
        crate::MAX_INVENTORY_BYTES
    )]
    TooLarge { path: String, size: u64 },
    #[error("inventory {path} is not valid ({} error(s)):\n{}", errors.len(), list(errors))]
    Invalid {
        path: String,
        errors: Vec<InventoryError>,
    },
}

fn list(errors: &[InventoryError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}
