//! `trellis-cni`, the chained CNI plugin, and what the node agent shares with it.
//!
//! On a pod's ADD the plugin hands the agent the pod's network namespace as an open
//! descriptor; a pod of an enrolled namespace starts only once it is captured. The plugin is
//! the binary (`src/bin/trellis-cni.rs`); this library holds the request on the agent's
//! socket ([`protocol`]) and the edit of the primary CNI's configuration list ([`conflist`]).

pub mod conflist;
pub mod protocol;

use std::{io, path::Path};

/// Writes `path` whole: a temporary file beside it, renamed over it, so a reader (the
/// runtime reading a conflist, the plugin reading the namespaces) sees the old content or the
/// new, never half. The mode of a file replaced is kept.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // A leading dot and a suffix the runtime ignores: never mistaken for a configuration.
    let tmp = dir.join(format!(".{name}.trellis-{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    if let Ok(old) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(old.permissions().mode()))?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
