//! Finding the pods that already run when the agent starts (an upgrade, a crash, a reboot),
//! without the CNI plugin: the kubelet puts every pod in a cgroup named after its UID, the
//! pod's first process is its sandbox (the pause container), and that process's network
//! namespace is the pod's. Nothing a pod's owner writes is read on the way: the UID comes
//! from the API server (through the controller), the cgroup from the kubelet.
//!
//! Layouts (cgroup v2), under the kubelet's cgroup root:
//! - systemd driver: `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<UID>.slice/…`
//!   (the UID's dashes written as underscores; guaranteed pods sit directly in
//!   `kubepods.slice` as `kubepods-pod<UID>.slice`);
//! - cgroupfs driver: `kubepods/besteffort/pod<UID>/…` (guaranteed: `kubepods/pod<UID>`).

use std::{
    collections::HashMap,
    fs::File,
    io,
    path::{Path, PathBuf},
};

use crate::datapath::netns;

/// The pod UID a kubelet cgroup directory's name carries, `None` for any other directory.
pub fn pod_uid(dir_name: &str) -> Option<String> {
    let uid = if let Some(slice) = dir_name.strip_suffix(".slice") {
        // systemd: the last dash-separated part is `pod<uid with underscores>`.
        slice.rsplit('-').next()?.strip_prefix("pod")?.replace('_', "-")
    } else {
        dir_name.strip_prefix("pod")?.to_string()
    };
    is_uid(&uid).then_some(uid)
}

/// A UID as the API server writes them: 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The pods' cgroup directories under the kubelet's cgroup `root`, by pod UID.
pub fn pod_cgroups(root: &Path) -> HashMap<String, PathBuf> {
    let mut found = HashMap::new();
    // kubepods → QoS class → pod: three levels, and only through kubepods directories.
    let mut level = vec![root.to_path_buf()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if let Some(uid) = pod_uid(name) {
                    found.insert(uid, entry.path());
                } else if name.starts_with("kubepods") || matches!(name, "burstable" | "besteffort") {
                    next.push(entry.path());
                }
            }
        }
        level = next;
    }
    found
}

/// The pod's sandbox process: the oldest process in the pod's cgroup tree (the pause
/// container starts before, and outlives, the pod's containers). `None` while it has none.
pub fn sandbox_pid(pod_cgroup: &Path) -> io::Result<Option<u32>> {
    let mut oldest: Option<(u64, u32)> = None;
    let mut dirs = vec![pod_cgroup.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            // Gone since the read: skip it.
            let Some(start) = start_time(pid) else { continue };
            if oldest.is_none_or(|(s, p)| (start, pid) < (s, p)) {
                oldest = Some((start, pid));
            }
        }
        for entry in std::fs::read_dir(&dir)?.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    Ok(oldest.map(|(_, pid)| pid))
}

/// `/proc/<pid>/stat` field 22, the start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split(' ').nth(19)?.parse().ok()
}

/// The network namespace of the pod with this UID, found through the kubelet's cgroups, and
/// the sandbox process it was found through.
pub fn pod_netns(root: &Path, cgroups: &HashMap<String, PathBuf>, uid: &str) -> Result<(File, u32), String> {
    let Some(dir) = cgroups.get(uid) else {
        return Err(format!(
            "no sandbox reported by trellis-cni and no kubelet cgroup for pod UID {uid} under {}",
            root.display()
        ));
    };
    let pid = sandbox_pid(dir)
        .map_err(|e| format!("reading the processes of {}: {e}", dir.display()))?
        .ok_or_else(|| format!("the pod's cgroup {} has no process yet", dir.display()))?;
    process_netns(pid).map(|f| (f, pid))
}

/// The network namespace of process `pid`, if it is a pod's.
pub fn process_netns(pid: u32) -> Result<File, String> {
    netns::open_pod_netns(Path::new(&format!("/proc/{pid}/ns/net")))
        .map_err(|e| format!("the network namespace of the pod's sandbox process {pid}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    const UID: &str = "3c0e2b1a-7d7c-4c1e-9a55-0b6c1d2e3f40";

    #[test_case("kubepods-besteffort-pod3c0e2b1a_7d7c_4c1e_9a55_0b6c1d2e3f40.slice", Some(UID); "systemd besteffort")]
    #[test_case("kubepods-burstable-pod3c0e2b1a_7d7c_4c1e_9a55_0b6c1d2e3f40.slice", Some(UID); "systemd burstable")]
    #[test_case("kubepods-pod3c0e2b1a_7d7c_4c1e_9a55_0b6c1d2e3f40.slice", Some(UID); "systemd guaranteed")]
    #[test_case("pod3c0e2b1a-7d7c-4c1e-9a55-0b6c1d2e3f40", Some(UID); "cgroupfs")]
    #[test_case("kubepods-besteffort.slice", None; "a QoS slice")]
    #[test_case("cri-containerd-0b6c1d2e3f40.scope", None; "a container")]
    #[test_case("pod../../etc", None; "not a UID")]
    #[test_case("kubepods-podnot_a_uid.slice", None; "systemd, not a UID")]
    fn pod_uids_from_cgroup_names(name: &str, uid: Option<&str>) {
        assert_eq!(pod_uid(name).as_deref(), uid);
    }

    #[test]
    fn the_pods_of_both_drivers_are_found_and_nothing_else() {
        let root = std::env::temp_dir().join(format!("trellis-kubelet-{}", std::process::id()));
        let make = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
        let systemd = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3c0e2b1a_7d7c_4c1e_9a55_0b6c1d2e3f40.slice";
        make(&format!("{systemd}/cri-containerd-abc.scope"));
        make("kubepods/burstable/pod11111111-2222-3333-4444-555555555555/abc");
        make("system.slice/pod22222222-2222-3333-4444-555555555555");
        let found = pod_cgroups(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[UID], root.join(systemd));
        assert!(found.contains_key("11111111-2222-3333-4444-555555555555"));
    }

    #[test]
    fn the_start_time_of_this_process_is_read() {
        let me = start_time(std::process::id()).unwrap();
        assert!(me >= start_time(1).unwrap(), "init starts first");
    }
}
