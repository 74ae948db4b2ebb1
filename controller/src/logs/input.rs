//! What `farmctl logs` is given, read as servers and sites: files,
//! folders (one per server: `web01/`, `web02/`, ...) or zips, as copied
//! off the servers — `web01/W3SVC1/u_ex261207.log`,
//! `web02/inetpub/logs/LogFiles/W3SVC1/...`, `web01/HTTPERR/httperr1.log`.
//!
//! A log's server is the nearest folder above its site folder (`W3SVC<id>`
//! or `HTTPERR`) that is not one of Windows's own (`LogFiles`, `logs`,
//! `inetpub`, ...); without such a folder, the folder or zip given. Its
//! site is the `W3SVC<id>` folder it is in.
use std::path::{Path, PathBuf};

use farm_traffic::names::{self, Family};

/// One log to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub server: String,
    /// `W3SVC<id>`; `None` for the HTTP.sys log and a W3C log outside a
    /// site folder.
    pub site: Option<String>,
    pub family: Family,
    pub location: Location,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    /// An entry of a zip, by its index.
    Zip {
        archive: PathBuf,
        index: usize,
        name: String,
    },
}

impl Location {
    pub fn describe(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Zip { archive, name, .. } => format!("{}!{name}", archive.display()),
        }
    }
}

farm_proto::message_error! {
    /// A path `farmctl logs` cannot read.
    InputError
}

/// Folder names that say where logs are, not whose.
fn generic(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    matches!(
        l.as_str(),
        "logfiles" | "logs" | "log" | "inetpub" | "system32" | "windows" | "c" | "c$" | "d" | "d$"
    ) || is_site_folder(&l)
        || l == "httperr"
}

fn is_site_folder(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.strip_prefix("w3svc")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The family of a log file's name.
fn family_of(file: &str) -> Option<Family> {
    if names::parse(Family::W3c, file, None).is_some() {
        Some(Family::W3c)
    } else if names::parse(Family::HttpErr, file, None).is_some() {
        Some(Family::HttpErr)
    } else {
        None
    }
}

/// Server and site of a log at `components` (folders then the file name)
/// under something named `base`.
fn place(base: &str, components: &[&str]) -> (String, Option<String>) {
    let (file_dir, _) = components.split_at(components.len().saturating_sub(1));
    let site_at = file_dir
        .iter()
        .rposition(|c| is_site_folder(c) || c.eq_ignore_ascii_case("httperr"));
    let site = site_at
        .map(|k| file_dir[k])
        .filter(|c| is_site_folder(c))
        .map(|c| c.to_ascii_uppercase());
    let above = &file_dir[..site_at.unwrap_or(file_dir.len())];
    let server = above
        .iter()
        .rev()
        .find(|c| !generic(c))
        .map(|c| c.to_string())
        .unwrap_or_else(|| base.to_string());
    (server, site)
}

fn base_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .or_else(|| path.file_name())
        .map(|s| s.to_string_lossy().into_owned());
    match stem {
        Some(s) if !s.is_empty() && s != "." => s,
        // `.` or `/`: the folder's own name.
        _ => std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "server".into()),
    }
}

/// Every log under `paths`, in a stable order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<Source>, InputError> {
    let mut out = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).map_err(|e| InputError(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            let base = base_name(path);
            let before = out.len();
            walk(path, path, &base, 0, &mut out)?;
            if out.len() == before {
                return Err(InputError(format!(
                    "{}: no IIS log in it (u_ex*.log, ex*.log, httperr*.log)",
                    path.display()
                )));
            }
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
        {
            zip_sources(path, &mut out)?;
        } else {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(family) = family_of(&name) else {
                return Err(InputError(format!(
                    "{}: not an IIS log file (u_ex*.log, ex*.log, httperr*.log), a folder or a zip",
                    path.display()
                )));
            };
            let parents: Vec<String> = path
                .parent()
                .map(|p| {
                    p.components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let mut comps: Vec<&str> = parents.iter().map(String::as_str).collect();
            comps.push(&name);
            let (server, site) = place("server", &comps);
            out.push(Source {
                server,
                site,
                family,
                location: Location::File(path.clone()),
                size: meta.len(),
            });
        }
    }
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    base: &str,
    depth: usize,
    out: &mut Vec<Source>,
) -> Result<(), InputError> {
    // Deep enough for `web01\inetpub\logs\LogFiles\W3SVC1`.
    if depth > 8 {
        return Ok(());
    }
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
        .map_err(|e| InputError(format!("{}: {e}", dir.display())))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, base, depth + 1, out)?;
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let zip = name.to_ascii_lowercase().ends_with(".zip");
        if zip {
            zip_sources(&path, out)?;
            continue;
        }
        let Some(family) = family_of(&name) else {
            continue;
        };
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let comps: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let comps: Vec<&str> = comps.iter().map(String::as_str).collect();
        let (server, site) = place(base, &comps);
        out.push(Source {
            server,
            site,
            family,
            location: Location::File(path.clone()),
            size: meta.len(),
        });
    }
    Ok(())
}

fn zip_sources(path: &Path, out: &mut Vec<Source>) -> Result<(), InputError> {
    let file =
        std::fs::File::open(path).map_err(|e| InputError(format!("{}: {e}", path.display())))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| InputError(format!("{}: not a readable zip: {e}", path.display())))?;
    let base = base_name(path);
    let before = out.len();
    for index in 0..zip.len() {
        let Ok(entry) = zip.by_index(index) else {
            continue;
        };
        if entry.is_dir() {
            continue;
        }
        // Names as the zip gives them, with either separator.
        let Ok(name) = entry.name() else {
            continue;
        };
        let name = name.replace('\\', "/");
        let comps: Vec<&str> = name
            .split('/')
            .filter(|c| !c.is_empty() && *c != "..")
            .collect();
        let Some(file) = comps.last() else {
            continue;
        };
        let Some(family) = family_of(file) else {
            continue;
        };
        let (server, site) = place(&base, &comps);
        out.push(Source {
            server,
            site,
            family,
            location: Location::Zip {
                archive: path.to_path_buf(),
                index,
                name: name.clone(),
            },
            size: entry.size(),
        });
    }
    if out.len() == before {
        return Err(InputError(format!(
            "{}: no IIS log in the zip (u_ex*.log, ex*.log, httperr*.log)",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_sites_from_where_the_logs_are() {
        let p = |base: &str, path: &str| place(base, &path.split('/').collect::<Vec<_>>());
        assert_eq!(
            p("copy", "web01/W3SVC1/u_ex261207.log"),
            ("web01".into(), Some("W3SVC1".into()))
        );
        assert_eq!(
            p("copy", "web02/inetpub/logs/LogFiles/w3svc2/u_ex261207.log"),
            ("web02".into(), Some("W3SVC2".into()))
        );
        assert_eq!(
            p("copy", "web03/HTTPERR/httperr1.log"),
            ("web03".into(), None)
        );
        assert_eq!(
            p("web04", "W3SVC1/u_ex261207.log"),
            ("web04".into(), Some("W3SVC1".into()))
        );
        assert_eq!(p("web05", "u_ex261207.log"), ("web05".into(), None));
        assert_eq!(p("all", "web06/u_ex261207.log"), ("web06".into(), None));
    }
}
