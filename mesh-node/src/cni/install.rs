//! Keeping `trellis-cni` in place: the plugin binary in the CNI bin directory and our entry
//! chained last in the primary CNI's configuration list. The primary CNI (Calico, Cilium,
//! flannel, ...) rewrites its file when it restarts or upgrades, dropping entries it did not
//! write; the node checks every second and puts ours back, so a pod of an enrolled namespace
//! never starts uncaptured for long after such a rewrite (and while our entry is missing,
//! the enrollment pass still captures it from the kubelet's cgroups).
//!
//! Uninstall takes the entry out and leaves the list as it was.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use mesh_cni::conflist::{self, PluginEntry, PLUGIN_TYPE};
use serde::Serialize;
use serde_json::Value;

use super::Error;

/// How often the configuration is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Where the plugin goes and what it is told.
#[derive(Debug, Clone, Serialize)]
pub struct Install {
    /// The runtime's CNI configuration directory (e.g. `/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// The runtime's CNI plugin directory (e.g. `/opt/cni/bin`), `None` to leave the binary
    /// to someone else.
    pub bin_dir: Option<PathBuf>,
    /// The `trellis-cni` binary to copy there.
    pub plugin: PathBuf,
    pub entry: PluginEntry,
}

/// What a check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Our entry was there, and the binary too.
    InPlace(PathBuf),
    /// Our entry was put (back) into this file.
    Inserted(PathBuf),
    /// No configuration yet (the primary CNI has not written one).
    NoConfig,
    /// Not chained yet: the node has not written the enrolled namespaces (no config from
    /// the controller yet), and a plugin without them would let mesh pods start uncaptured
    /// whenever the agent does not answer.
    WaitingForNamespaces,
    /// The file changed while we edited it (the primary CNI wrote it): left alone this
    /// time.
    Raced(PathBuf),
}

impl Install {
    /// Puts the binary and our entry in place, if they are not.
    pub fn ensure(&self) -> Result<Outcome, Error> {
        if let Some(bin_dir) = &self.bin_dir {
            self.copy_plugin(bin_dir)?;
        }
        if !self.entry.enrolled_namespaces_file.exists() {
            return Ok(Outcome::WaitingForNamespaces);
        }
        let dir = &self.conf_dir;
        let Some(path) = conflist::primary(dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?
        else {
            return Ok(Outcome::NoConfig);
        };
        let (bytes, current) = read(&path)?;
        let name = path.display().to_string();
        match conflist::insert(&current, &self.entry, &name) {
            Ok(None) => Ok(Outcome::InPlace(path)),
            Ok(Some(updated)) => {
                // The primary CNI may have rewritten the file since it was read: then this
                // edit is dropped, and the next check works on the new content.
                if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
                    return Ok(Outcome::Raced(path));
                }
                write_json(&path, &updated)?;
                Ok(Outcome::Inserted(path))
            }
            Err(e) => Err(Error::Config {
                path,
                message: format!("{e}: trellis-cni can only be chained into a .conflist"),
            }),
        }
    }

    /// Copies the plugin when the one in place differs (an upgrade), atomically: the runtime
    /// may run it at any moment. Compared by size and modification time first, so the check
    /// every second reads no binary while nothing changed.
    fn copy_plugin(&self, bin_dir: &Path) -> Result<(), Error> {
        let target = bin_dir.join(PLUGIN_TYPE);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        let source = std::fs::metadata(&self.plugin).map_err(io(&self.plugin))?;
        let same = std::fs::metadata(&target)
            .is_ok_and(|t| t.len() == source.len() && t.modified().ok() >= source.modified().ok());
        if same {
            return Ok(());
        }
        let ours = std::fs::read(&self.plugin).map_err(io(&self.plugin))?;
        mesh_cni::write_atomically(&target, &ours).map_err(io(&target))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).map_err(io(&target))
    }

    /// Keeps everything in place until the process ends (a thread: a check is a few small
    /// file reads), saying in `state` where the plugin stands (for `mesh-ctl status`).
    pub fn watch(self, state: Arc<Mutex<Option<String>>>) {
        let mut last: Option<Result<Outcome, String>> = None;
        loop {
            let now = self.ensure().map_err(|e| e.to_string());
            *state.lock().unwrap_or_else(|p| p.into_inner()) = Some(describe(&now));
            match &now {
                Ok(Outcome::Inserted(path)) => tracing::info!(
                    conflist = %path.display(),
                    "trellis-cni chained into the CNI configuration (it was not there)"
                ),
                Ok(Outcome::NoConfig) if last.as_ref() != Some(&now) => tracing::warn!(
                    dir = %self.conf_dir.display(),
                    "no CNI configuration yet: waiting for the primary CNI to write one"
                ),
                Ok(Outcome::WaitingForNamespaces) if last.as_ref() != Some(&now) => tracing::info!(
                    "trellis-cni is chained once the first config from the controller is applied"
                ),
                Err(e) if last.as_ref() != Some(&now) => {
                    tracing::error!(error = %e, "cannot chain trellis-cni; will retry")
                }
                _ => {}
            }
            last = Some(now);
            std::thread::sleep(CHECK_EVERY);
        }
    }
}

/// A check's outcome as `mesh-ctl status` shows it: `chained into …` when all is well.
pub fn describe(outcome: &Result<Outcome, String>) -> String {
    match outcome {
        Ok(Outcome::InPlace(path) | Outcome::Inserted(path) | Outcome::Raced(path)) => {
            format!("{CHAINED} {}", path.display())
        }
        Ok(Outcome::NoConfig) => "not chained: no CNI configuration yet".into(),
        Ok(Outcome::WaitingForNamespaces) => "not chained yet: waiting for the first config".into(),
        Err(e) => format!("not chained: {e}"),
    }
}

/// How [`describe`] starts when the plugin is in place (what `mesh-ctl status` checks).
const CHAINED: &str = mesh_api::status::CNI_CHAINED;

/// Takes our entry out of every configuration in `conf_dir`, and the binary out of
/// `bin_dir`. What it changed.
pub fn uninstall(conf_dir: &Path, bin_dir: Option<&Path>) -> Result<Vec<PathBuf>, Error> {
    let mut changed = Vec::new();
    let entries = match std::fs::read_dir(conf_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(changed),
        Err(source) => {
            return Err(Error::Io {
                path: conf_dir.to_owned(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for path in files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
    {
        let Ok((_, current)) = read(&path) else { continue };
        if let Some(without) = conflist::remove(&current) {
            write_json(&path, &without)?;
            changed.push(path);
        }
    }
    if let Some(bin) = bin_dir.map(|d| d.join(PLUGIN_TYPE)) {
        if bin.exists() {
            std::fs::remove_file(&bin).map_err(|source| Error::Io {
                path: bin.clone(),
                source,
            })?;
            changed.push(bin);
        }
    }
    Ok(changed)
}

/// The file's bytes and its JSON.
fn read(path: &Path) -> Result<(Vec<u8>, Value), Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let json = serde_json::from_slice(&bytes).map_err(|e| Error::Config {
        path: path.to_owned(),
        message: format!("not valid JSON: {e}"),
    })?;
    Ok((bytes, json))
}

fn write_json(path: &Path, value: &Value) -> Result<(), Error> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON values serialise");
    bytes.push(b'\n');
    mesh_cni::write_atomically(path, &bytes).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_is_kept_in_the_primary_list_and_uninstall_restores_it() {
        let dir = std::env::temp_dir().join(format!("trellis-install-{}", std::process::id()));
        let (conf, bin) = (dir.join("net.d"), dir.join("bin"));
        std::fs::create_dir_all(&conf).unwrap();
        let plugin = dir.join("trellis-cni-build");
        std::fs::write(&plugin, b"#!/bin/sh\n").unwrap();
        let namespaces = dir.join("ns.json");
        let install = Install {
            conf_dir: conf.clone(),
            bin_dir: Some(bin.clone()),
            plugin,
            entry: PluginEntry::new(Path::new("/run/t/cni.sock"), &namespaces),
        };
        assert_eq!(install.ensure().unwrap(), Outcome::WaitingForNamespaces);
        std::fs::write(&namespaces, r#"{"namespaces": []}"#).unwrap();
        assert_eq!(install.ensure().unwrap(), Outcome::NoConfig);
        let original =
            serde_json::json!({"cniVersion": "1.0.0", "name": "pods", "plugins": [{"type": "ptp"}]});
        let list = conf.join("10-pods.conflist");
        std::fs::write(&list, original.to_string()).unwrap();
        assert_eq!(install.ensure().unwrap(), Outcome::Inserted(list.clone()));
        assert_eq!(install.ensure().unwrap(), Outcome::InPlace(list.clone()));
        assert!(bin.join(PLUGIN_TYPE).exists());
        // The primary CNI rewrites its file: the next check puts us back.
        std::fs::write(&list, original.to_string()).unwrap();
        assert_eq!(install.ensure().unwrap(), Outcome::Inserted(list.clone()));

        let changed = uninstall(&conf, Some(&bin)).unwrap();
        assert_eq!(changed, [list.clone(), bin.join(PLUGIN_TYPE)]);
        assert_eq!(read(&list).unwrap().1, original);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
