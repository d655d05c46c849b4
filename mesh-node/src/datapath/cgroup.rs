//! Finding cgroup v2: where it is mounted (`/sys/fs/cgroup` on unified hosts,
//! `/sys/fs/cgroup/unified` on hybrid ones, so it is read from mountinfo, never assumed) and
//! which cgroup this process is in, whose id the capture program exempts.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::Error;

/// The cgroup v2 mount point, from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Result<PathBuf, Error> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::Cgroup(format!("reading /proc/self/mountinfo: {e}")))?;
    find_cgroup2_mount(&mountinfo).ok_or_else(|| {
        Error::Cgroup("no cgroup2 filesystem is mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or boot with cgroup v2".into())
    })
}

/// Pure part of [`cgroup2_root`]: the first mount whose filesystem type is `cgroup2`.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> ..."
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        before.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The cgroup v2 directory of this process.
pub fn own_cgroup(root: &Path) -> Result<PathBuf, Error> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| Error::Cgroup(format!("reading /proc/self/cgroup: {e}")))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| Error::Cgroup("/proc/self/cgroup has no cgroup v2 (0::) entry".into()))?;
    Ok(root.join(rel.trim_start_matches('/')))
}

/// The cgroup id the kernel reports from `bpf_get_current_cgroup_id`: the inode number of
/// the cgroup's directory in the cgroup2 filesystem.
pub fn cgroup_id(dir: &Path) -> Result<u64, Error> {
    fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|e| Error::Cgroup(format!("{}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_on_hybrid_and_unified_hosts() {
        let hybrid = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu";
        assert_eq!(
            find_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw";
        assert_eq!(find_cgroup2_mount(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            find_cgroup2_mount("27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw"),
            None
        );
    }
}
