//! What a release package may be: a zip whose entries are plain relative
//! files and folders, within size, count and compression-ratio limits.
//! The controller checks a package before it touches any node; the agent
//! checks it again before it extracts a byte.
use std::io::{Read, Seek};

crate::message_error! {
    /// Why a release package is refused, naming the entry.
    PackageRefused
}

/// Bounds on a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageLimits {
    pub max_files: usize,
    /// One file, uncompressed.
    pub max_file_bytes: u64,
    /// All files, uncompressed.
    pub max_total_bytes: u64,
    /// Uncompressed / compressed size of an entry over 1 MiB.
    pub max_ratio: u64,
}

impl Default for PackageLimits {
    fn default() -> Self {
        Self {
            max_files: 100_000,
            max_file_bytes: 2048 * MB,
            max_total_bytes: 8192 * MB,
            max_ratio: 200,
        }
    }
}

const MB: u64 = 1024 * 1024;

/// What a package holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSummary {
    pub entries: usize,
    /// Files, uncompressed, in all.
    pub bytes: u64,
}

/// Names Windows gives a meaning to, in any case, with any extension.
const DEVICE_NAMES: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// Why an entry's name may not be extracted, if it may not.
pub fn bad_entry_name(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Some("an empty name or control characters");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Some("an absolute path");
    }
    if name.contains(':') {
        return Some("a drive letter or an alternate data stream (`:`)");
    }
    for part in name.split(['/', '\\']).filter(|p| !p.is_empty()) {
        if part == ".." || part == "." {
            return Some("a `..` or `.` path component");
        }
        if part.ends_with(' ') || part.ends_with('.') {
            return Some("a name ending in a space or a dot");
        }
        let stem = part.split('.').next().unwrap_or(part).to_ascii_lowercase();
        if DEVICE_NAMES.contains(&stem.as_str()) {
            return Some("a Windows device name (CON, NUL, COM1, ...)");
        }
    }
    None
}

/// Checks every entry of a zip from its central directory; nothing needs
/// to be extracted to know a package is refused.
pub fn inspect<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    limits: &PackageLimits,
) -> Result<PackageSummary, PackageRefused> {
    if archive.len() > limits.max_files {
        return Err(PackageRefused(format!(
            "the package has {} entries; at most {} are taken",
            archive.len(),
            limits.max_files
        )));
    }
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let e = archive
            .by_index_raw(i)
            .map_err(|e| PackageRefused(format!("entry {i}: {e}")))?;
        // The name as stored; a name that is not UTF-8 is refused (the
        // same on every zip crate version this builds with).
        let name = std::str::from_utf8(e.name_raw())
            .map_err(|_| PackageRefused(format!("entry {i}: its name is not UTF-8")))?
            .to_string();
        let shown = name.escape_debug().to_string();
        if let Some(why) = bad_entry_name(&name) {
            return Err(PackageRefused(format!("entry `{shown}` has {why}")));
        }
        if e.enclosed_name().is_none() {
            return Err(PackageRefused(format!(
                "entry `{shown}` would land outside the release folder"
            )));
        }
        if e.is_symlink() {
            return Err(PackageRefused(format!(
                "entry `{shown}` is a symbolic link"
            )));
        }
        if e.encrypted() {
            return Err(PackageRefused(format!("entry `{shown}` is encrypted")));
        }
        if e.size() > MB && e.size() / e.compressed_size().max(1) > limits.max_ratio {
            return Err(PackageRefused(format!(
                "entry `{shown}` expands {} bytes to {}: a compression ratio over {} (a zip bomb?)",
                e.compressed_size(),
                e.size(),
                limits.max_ratio
            )));
        }
        if e.size() > limits.max_file_bytes {
            return Err(PackageRefused(format!(
                "entry `{shown}` is {} bytes; one file may be at most {} bytes",
                e.size(),
                limits.max_file_bytes
            )));
        }
        total = total.saturating_add(e.size());
        if total > limits.max_total_bytes {
            return Err(PackageRefused(format!(
                "the package expands to more than {} bytes",
                limits.max_total_bytes
            )));
        }
    }
    Ok(PackageSummary {
        entries: archive.len(),
        bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_named() {
        for (name, why) in [
            ("../evil.txt", "`..`"),
            ("a/../../evil", "`..`"),
            ("..\\evil.dll", "`..`"),
            ("/etc/passwd", "absolute"),
            ("\\Windows\\x", "absolute"),
            ("C:\\Windows\\x", "drive letter"),
            ("web.config:hidden", "data stream"),
            ("CON.txt", "device name"),
            ("bin/nul", "device name"),
            ("trailing. ", "ending in"),
            ("a\u{0}b", "control"),
        ] {
            let got = bad_entry_name(name).unwrap_or_else(|| panic!("{name:?} passed"));
            assert!(got.contains(why), "{name:?}: {got}");
        }
        for ok in [
            "index.html",
            "bin/app.dll",
            "css\\site.css",
            "a.b.c/d.e",
            "console.log",
        ] {
            assert_eq!(bad_entry_name(ok), None, "{ok}");
        }
    }
}
