//! The YAML inventory of one IIS farm.
//!
//! # Layout
//! - [`raw`]: the file as written, `deny_unknown_fields` structs that serde
//!   fills in; nothing is checked beyond types.
//! - [`model`]: the checked inventory the controller works with.
//! - [`validate`]: turns the raw file into the model, collecting **every**
//!   error at once, each naming its place (`nodes[3].address`).
//!
//! A syntax or type error stops parsing at that point and is reported with
//! the field path and the line:column serde_yaml gives; once the file has the
//! right shape, all semantic errors are reported together.
#![forbid(unsafe_code)]

pub mod error;
pub mod model;
pub mod raw;
pub mod validate;
pub mod window;

pub use window::Window;

pub use error::{InventoryError, LoadError};
pub use model::*;

use std::path::Path;

/// Inventories are small; anything larger is a mistake (or an attack).
pub const MAX_INVENTORY_BYTES: u64 = 4 * 1024 * 1024;

/// Reads, parses and validates an inventory file.
pub fn load(path: &Path) -> Result<Inventory, LoadError> {
    let io_err = |source| LoadError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.len() > MAX_INVENTORY_BYTES {
        return Err(LoadError::TooLarge {
            path: path.display().to_string(),
            size: meta.len(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    let mut inv = parse(&text).map_err(|errors| LoadError::Invalid {
        path: path.display().to_string(),
        errors,
    })?;
    // Files are found next to the inventory unless the path is absolute.
    if let Some(dir) = path.parent() {
        let mut files: Vec<&mut std::path::PathBuf> = Vec::new();
        if let Some(tls) = inv.agent.tls.as_mut() {
            files.extend([&mut tls.ca, &mut tls.cert, &mut tls.key]);
        }
        if let Some(api) = inv.load_balancer.http_api_mut() {
            if let Secret::File(f) = &mut api.password {
                files.push(f);
            }
            if let Trust::Ca(ca) = &mut api.trust {
                files.push(ca);
            }
        }
        if let Some(st) = inv.state.as_mut() {
            if let Some(tls) = st.tls.as_mut() {
                files.extend([&mut tls.ca, &mut tls.cert, &mut tls.key]);
            }
            if let Some((_, Secret::File(f))) = st.user.as_mut() {
                files.push(f);
            }
        }
        for n in inv.notify.iter_mut() {
            if let WebhookUrl::Secret(Secret::File(f)) = &mut n.url {
                files.push(f);
            }
        }
        for p in files {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }
    Ok(inv)
}

/// Parses and validates inventory text.
pub fn parse(text: &str) -> Result<Inventory, Vec<InventoryError>> {
    let raw: raw::RawInventory =
        serde_yaml::from_str(text).map_err(|e| vec![InventoryError::from_yaml(&e)])?;
    validate::validate(raw)
}
