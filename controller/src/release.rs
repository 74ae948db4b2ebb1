//! Release packages on the controller's side: read, hashed and checked
//! before any node is touched (the agent checks again), and made from a
//! folder (the demo's generated releases).
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use farm_proto::package::{inspect, PackageLimits};
use sha2::{Digest, Sha256};

use crate::agent::Package;

farm_proto::message_error! {
    /// Why a release package cannot be read.
    PackageReadError
}

/// Reads a package: its size and sha256, and every entry checked against
/// the package rules. The error says what is wrong with it.
pub fn read_package(path: &Path) -> Result<Package, PackageReadError> {
    let shown = path.display();
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut f = std::fs::File::open(&abs)
        .map_err(|e| PackageReadError(format!("could not read {shown}: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| PackageReadError(format!("could not read {shown}: {e}")))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    if size == 0 {
        return Err(PackageReadError(format!("{shown} is empty")));
    }
    let file = std::fs::File::open(&abs)
        .map_err(|e| PackageReadError(format!("could not read {shown}: {e}")))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| PackageReadError(format!("{shown} is not a zip file: {e}")))?;
    inspect(&mut archive, &PackageLimits::default())
        .map_err(|e| PackageReadError(format!("{shown}: {e}")))?;
    Ok(Package {
        path: abs,
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// Zips `files` (path in the zip, content) into `out`.
pub fn write_package(out: &Path, files: &[(&str, &[u8])]) -> std::io::Result<PathBuf> {
    let f = std::fs::File::create(out)?;
    let mut w = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        w.start_file(*name, opts).map_err(std::io::Error::other)?;
        w.write_all(bytes)?;
    }
    w.finish().map_err(std::io::Error::other)?;
    Ok(out.to_path_buf())
}
