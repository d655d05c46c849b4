//! Chaining `trellis-cni` into the primary CNI's configuration list, and taking it out again.
//! Pure functions over the parsed JSON; the node agent does the reading and writing (and does
//! it again when the primary CNI rewrites its file without us).

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The plugin's `type` in a conflist (and its binary's name in the CNI bin directory).
pub const PLUGIN_TYPE: &str = "trellis-cni";

/// Our entry in the conflist's `plugins`: where the plugin finds the agent. Keys in camelCase,
/// as CNI configurations write them (the plugin reads them so).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub socket: PathBuf,
    pub enrolled_namespaces_file: PathBuf,
}

impl PluginEntry {
    pub fn new(socket: &Path, enrolled_namespaces_file: &Path) -> Self {
        Self {
            kind: PLUGIN_TYPE.into(),
            socket: socket.to_owned(),
            enrolled_namespaces_file: enrolled_namespaces_file.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("{0} is not a CNI configuration list (no \"plugins\" array)")]
    NotAList(String),
}

/// The conflist with our entry last in `plugins` (after every plugin that adds to the
/// result, so the pod's addresses are in the `prevResult` we get); `None` when it is there
/// already, exactly. An older entry of ours (other paths) is replaced.
pub fn insert(conflist: &Value, entry: &PluginEntry, name: &str) -> Result<Option<Value>, Error> {
    let mut out = conflist.clone();
    let plugins = plugins_mut(&mut out).ok_or_else(|| Error::NotAList(name.into()))?;
    let ours = serde_json::to_value(entry).expect("the entry serialises");
    if plugins.last() == Some(&ours) && plugins.iter().filter(|p| is_ours(p)).count() == 1 {
        return Ok(None);
    }
    plugins.retain(|p| !is_ours(p));
    plugins.push(ours);
    Ok(Some(out))
}

/// The conflist without our entry; `None` when it has none.
pub fn remove(conflist: &Value) -> Option<Value> {
    let mut out = conflist.clone();
    let plugins = plugins_mut(&mut out)?;
    let before = plugins.len();
    plugins.retain(|p| !is_ours(p));
    (plugins.len() != before).then_some(out)
}

/// Whether the conflist chains us.
pub fn contains(conflist: &Value) -> bool {
    conflist
        .get("plugins")
        .and_then(Value::as_array)
        .is_some_and(|p| p.iter().any(is_ours))
}

fn plugins_mut(conflist: &mut Value) -> Option<&mut Vec<Value>> {
    conflist.get_mut("plugins")?.as_array_mut()
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// The file the runtime uses: the first configuration by name in `dir`, as containerd and
/// CRI-O pick it (`.conf`, `.conflist` and `.json` files). `None` while the primary CNI has
/// not written one.
pub fn primary(dir: &Path) -> io::Result<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conf" | "conflist" | "json")
                ) && p.is_file()
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    files.sort();
    Ok(files.into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "pods",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.1.1.0/24"}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        })
    }

    fn entry() -> PluginEntry {
        PluginEntry::new(
            Path::new("/var/run/trellis/cni.sock"),
            Path::new("/var/run/trellis/ns.json"),
        )
    }

    #[test]
    fn our_entry_goes_last_once_and_comes_out_leaving_the_list_as_it_was() {
        let with = insert(&bridge(), &entry(), "10-pods.conflist").unwrap().unwrap();
        let types: Vec<&str> = with["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "portmap", "trellis-cni"]);
        assert!(contains(&with) && !contains(&bridge()));
        assert_eq!(insert(&with, &entry(), "f").unwrap(), None, "already there");
        assert_eq!(remove(&with), Some(bridge()));
        assert_eq!(remove(&bridge()), None);
    }

    #[test]
    fn an_entry_of_ours_elsewhere_or_with_old_paths_is_replaced() {
        let mut moved = bridge();
        moved["plugins"].as_array_mut().unwrap().insert(
            0,
            json!({"type": "trellis-cni", "socket": "/old.sock", "enrolledNamespacesFile": "/old"}),
        );
        let fixed = insert(&moved, &entry(), "f").unwrap().unwrap();
        assert_eq!(fixed, insert(&bridge(), &entry(), "f").unwrap().unwrap());
    }

    #[test]
    fn the_entry_is_written_with_the_keys_the_plugin_reads() {
        let written = serde_json::to_value(entry()).unwrap();
        assert_eq!(
            written,
            json!({"type": "trellis-cni", "socket": "/var/run/trellis/cni.sock", "enrolledNamespacesFile": "/var/run/trellis/ns.json"})
        );
    }

    #[test]
    fn a_single_plugin_config_is_refused_with_its_name() {
        let conf = json!({"cniVersion": "1.0.0", "name": "pods", "type": "bridge"});
        assert_eq!(
            insert(&conf, &entry(), "10-pods.conf"),
            Err(Error::NotAList("10-pods.conf".into()))
        );
    }

    #[test]
    fn the_runtime_uses_the_first_configuration_by_name() {
        let dir = std::env::temp_dir().join(format!("trellis-conflist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(primary(&dir).unwrap(), None);
        for f in ["20-b.conflist", "10-a.conflist", "05-notes.txt"] {
            std::fs::write(dir.join(f), "{}").unwrap();
        }
        assert_eq!(primary(&dir).unwrap(), Some(dir.join("10-a.conflist")));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(primary(&dir.join("missing")).unwrap(), None);
    }
}
