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
    // [kubelet] → kubepods → QoS class → pod: at most four levels, and only through the
    // kubelet's directories (`kubepods.slice`, `kubelet.slice/kubelet-kubepods.slice` with
    // `--cgroup-root`, as kind runs it; cgroupfs `kubepods/burstable`).
    let mut level = vec![root.to_path_buf()];
    for _ in 0..4 {
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
                } else if name.contains("kubepods")
                    || matches!(name, "kubelet.slice" | "kubelet" | "burstable" | "besteffort")
                {
                    next.push(entry.path());
                }
            }
        }
        level = next;
    }
    found
}

/// The processes of the pod's cgroup tree, oldest first, with their start times: the
/// sandbox (pause) starts before the pod's containers.
pub fn processes_oldest_first(pod_cgroup: &Path) -> io::Result<Vec<(u64, u32)>> {
    let mut all = Vec::new();
    let mut dirs = vec![pod_cgroup.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(p) => p,
            // Removed while we walk (a container ended): nothing there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            // Gone since the read: skip it.
            if let Some(start) = start_time(pid) {
                all.push((start, pid));
            }
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    all.sort_unstable();
    Ok(all)
}

/// `/proc/<pid>/stat` field 22, the start time in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split(' ').nth(19)?.parse().ok()
}

/// A process found as a pod's sandbox: its pid and start time (which tells a reused pid
/// from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxProcess {
    pub pid: u32,
    pub start: u64,
}

/// The network namespace of the pod with this UID, found through the kubelet's cgroups: that
/// of its oldest process in a network namespace other than the node's (a runtime's monitor
/// process, CRI-O's conmon, may sit in the pod's cgroup, in the node's namespace). The
/// caller checks that the namespace holds the pod's address.
pub fn pod_netns(
    root: &Path,
    cgroups: &HashMap<String, PathBuf>,
    uid: &str,
) -> Result<(File, SandboxProcess), String> {
    let Some(dir) = cgroups.get(uid) else {
        return Err(format!(
            "no sandbox reported by trellis-cni and no kubelet cgroup for pod UID {uid} under {}",
            root.display()
        ));
    };
    let processes = processes_oldest_first(dir)
        .map_err(|e| format!("reading the processes of {}: {e}", dir.display()))?;
    if processes.is_empty() {
        return Err(format!("the pod's cgroup {} has no process yet", dir.display()));
    }
    let mut last_error = String::new();
    for (start, pid) in processes {
        let sandbox = SandboxProcess { pid, start };
        match process_netns(sandbox) {
            Ok(ns) => return Ok((ns, sandbox)),
            Err(e) => last_error = e,
        }
    }
    Err(format!(
        "no process of the pod's cgroup {} is in a pod network namespace: {last_error}",
        dir.display()
    ))
}

/// The network namespace of a sandbox process found earlier, if it still runs (the same
/// start time: not a new process that got its pid) and is in a pod's namespace.
pub fn process_netns(p: SandboxProcess) -> Result<File, String> {
    let ns = netns::open_pod_netns(Path::new(&format!("/proc/{}/ns/net", p.pid)))
        .map_err(|e| format!("the network namespace of process {}: {e}", p.pid))?;
    // Checked after the open: a pid reused in between shows a new start time.
    if start_time(p.pid) != Some(p.start) {
        return Err(format!("process {} has ended", p.pid));
    }
    Ok(ns)
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
        // kind: the kubelet's --cgroup-root puts everything under kubelet.slice.
        make("kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod33333333_2222_3333_4444_555555555555.slice");
        make("system.slice/pod22222222-2222-3333-4444-555555555555");
        let found = pod_cgroups(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.contains_key("33333333-2222-3333-4444-555555555555"));
        assert_eq!(found[UID], root.join(systemd));
        assert!(found.contains_key("11111111-2222-3333-4444-555555555555"));
    }

    #[test]
    fn the_start_time_of_this_process_is_read() {
        let me = start_time(std::process::id()).unwrap();
        assert!(me >= start_time(1).unwrap(), "init starts first");
    }
}
