//! The kernel side of the node: loads the programs from `mesh-ebpf`, attaches and pins them,
//! and owns the maps through which enrollment and the proxy talk to them.
//!
//! Everything is pinned under the bpffs directory (`maps/`, `links/`), so the datapath keeps
//! enforcing while the agent restarts. A restarting agent reuses the pinned maps and swaps
//! its freshly loaded programs into the pinned links atomically (`BPF_LINK_UPDATE`).

pub mod cgroup;
pub mod netns;
mod sys;
pub mod tproxy;
pub mod veth;

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Mutex,
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::{
        links::FdLink, tc::TcAttachOptions, CgroupAttachMode, CgroupSockAddr, LinkOrder, SchedClassifier,
        SockOps, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
use mesh_common::{
    counters, maps, programs, EnrolledIp, EnrolledPod, NonTcpCounts, OrigDst, ProxyConfig, SockTuple,
};
use serde::Serialize;

use crate::config::Ipv4Cidr;

/// The compiled `mesh-ebpf` object, built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mesh-ebpf"));

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not on a bpffs: mount it with `mount -t bpf bpf /sys/fs/bpf` (cargo xtask setup does)")]
    NoBpffs(PathBuf),
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error("loading the eBPF object failed (kernel too old, missing BTF, or not root?): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("{what} {}: {source}", path.display())]
    Pin {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("attaching guard to {iface}: {source}")]
    Guard {
        iface: String,
        source: aya::programs::ProgramError,
    },
    #[error("eBPF link of {name}: {source}")]
    Link {
        name: &'static str,
        source: aya::programs::links::LinkError,
    },
}

/// What the datapath needs to know about the node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bpffs_dir: PathBuf,
    /// Where `connect4` and `sockops` attach.
    pub cgroup: PathBuf,
    /// The proxy's own cgroup, never redirected.
    pub proxy_cgroup: PathBuf,
    pub proxy_ip: Ipv4Addr,
    pub outbound_port: u16,
    pub inbound_port: u16,
    pub proxy_mark: u32,
    pub excluded: Vec<Ipv4Cidr>,
    /// Drop enrolled pods' non-TCP packets except DNS with `cluster_dns`.
    pub drop_non_tcp: bool,
    pub cluster_dns: Option<Ipv4Addr>,
}

/// A pod as the kernel programs know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodDatapath {
    pub netns_cookie: u64,
    pub ip: Ipv4Addr,
    /// Host-side veth, where the guards attach.
    pub host_iface: String,
    pub host_ifindex: u32,
    /// The host side is a bridge port: traffic between pods of the bridge skips the node's
    /// IP layer (the proxy then dials local pods from the node's address).
    pub bridged: bool,
}

/// Loaded programs and the maps enrollment writes.
pub struct Datapath {
    ebpf: Ebpf,
    links_dir: PathBuf,
    enrolled_netns: HashMap<MapData, u64, EnrolledPod>,
    enrolled_ips: HashMap<MapData, u32, EnrolledIp>,
    pending: HashMap<MapData, u64, OrigDst>,
    excluded: LpmTrie<MapData, u32, u8>,
    counters: PerCpuArray<MapData, u64>,
    non_tcp: PerCpuHashMap<MapData, u32, NonTcpCounts>,
}

/// The tuple-keyed original destinations, read by the proxy after every `accept()`.
pub struct OrigDstTable {
    map: Mutex<HashMap<MapData, SockTuple, OrigDst>>,
    /// A second handle on the same pinned map for the admin view, so iterating it never
    /// holds the lock the accept path takes.
    view: HashMap<MapData, SockTuple, OrigDst>,
}

impl OrigDstTable {
    /// Removes and returns the entry sockops wrote for this connection.
    pub fn take(&self, tuple: &SockTuple) -> Option<OrigDst> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let found = map.get(tuple, 0).ok()?;
        // A failed delete only leaves an entry for the LRU to age out.
        let _ = map.remove(tuple);
        Some(found)
    }

    fn entries(&self) -> Vec<(SockTuple, OrigDst)> {
        self.view.iter().filter_map(Result::ok).collect()
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(Error::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })?;
    T::try_from(map).map_err(|source| Error::Map { name, source })
}

fn program_error(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> Error {
    move |source| Error::Program { name, source }
}

impl Datapath {
    /// Loads the programs, writes the proxy config, and makes sure `connect4` and `sockops`
    /// are attached to `settings.cgroup` running this build's code.
    pub fn load(settings: &Settings) -> Result<(Self, OrigDstTable), Error> {
        let maps_dir = settings.bpffs_dir.join("maps");
        let links_dir = settings.bpffs_dir.join("links");
        for dir in [&maps_dir, &links_dir] {
            fs::create_dir_all(dir).map_err(|source| Error::Pin {
                what: "creating",
                path: dir.clone(),
                source,
            })?;
        }
        ensure_bpffs(&settings.bpffs_dir)?;

        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .load(EBPF_OBJECT)?;

        let mut config: Array<MapData, ProxyConfig> = take_map(&mut ebpf, maps::PROXY_CONFIG)?;
        let proxy_config = ProxyConfig {
            proxy_cgroup_id: cgroup::cgroup_id(&settings.proxy_cgroup)?,
            proxy_ip: u32::from(settings.proxy_ip).to_be(),
            proxy_mark: settings.proxy_mark,
            outbound_port: settings.outbound_port.to_be(),
            inbound_port: settings.inbound_port.to_be(),
            ready: 1,
            drop_non_tcp: u32::from(settings.drop_non_tcp),
            cluster_dns_ip: settings.cluster_dns.map_or(0, |ip| u32::from(ip).to_be()),
        };
        config.set(0, proxy_config, 0).map_err(|source| Error::Map {
            name: maps::PROXY_CONFIG,
            source,
        })?;

        let mut datapath = Self {
            enrolled_netns: take_map(&mut ebpf, maps::ENROLLED_NETNS)?,
            enrolled_ips: take_map(&mut ebpf, maps::ENROLLED_IPS)?,
            pending: take_map(&mut ebpf, maps::PENDING)?,
            excluded: take_map(&mut ebpf, maps::EXCLUDED)?,
            counters: take_map(&mut ebpf, maps::COUNTERS)?,
            non_tcp: take_map(&mut ebpf, maps::NON_TCP)?,
            links_dir,
            ebpf,
        };
        let orig_dst_pin = maps_dir.join(maps::ORIG_DST);
        let view = MapData::from_pin(&orig_dst_pin)
            .map_err(|source| Error::Map {
                name: maps::ORIG_DST,
                source: aya::maps::MapError::IoError(std::io::Error::other(source)),
            })
            .and_then(|data| {
                HashMap::try_from(aya::maps::Map::HashMap(data)).map_err(|source| Error::Map {
                    name: maps::ORIG_DST,
                    source,
                })
            });
        let orig_dst = OrigDstTable {
            map: Mutex::new(take_map(&mut datapath.ebpf, maps::ORIG_DST)?),
            view: view?,
        };
        datapath.set_excluded(&settings.excluded)?;

        let cgroup = fs::File::open(&settings.cgroup)
            .map_err(|e| Error::Cgroup(format!("opening {}: {e}", settings.cgroup.display())))?;
        for (name, pin) in [(programs::CONNECT4, "connect4"), (programs::CONNECT6, "connect6")] {
            let prog: &mut CgroupSockAddr = datapath.program(name)?;
            prog.load().map_err(program_error(name))?;
            datapath.attach_or_update(name, pin, |prog: &mut CgroupSockAddr| {
                let err = program_error(name);
                let id = prog.attach(&cgroup, CgroupAttachMode::Single).map_err(&err)?;
                let link = prog.take_link(id).map_err(&err)?;
                FdLink::try_from(link).map_err(|source| Error::Link { name, source })
            })?;
        }
        {
            let prog: &mut SockOps = datapath.program(programs::SOCKOPS)?;
            prog.load().map_err(program_error(programs::SOCKOPS))?;
        }
        datapath.attach_or_update(programs::SOCKOPS, "sockops", |prog: &mut SockOps| {
            let err = program_error(programs::SOCKOPS);
            let id = prog.attach(&cgroup, CgroupAttachMode::Single).map_err(&err)?;
            let link = prog.take_link(id).map_err(&err)?;
            FdLink::try_from(link).map_err(|source| Error::Link {
                name: programs::SOCKOPS,
                source,
            })
        })?;
        for name in [programs::GUARD_FROM_POD, programs::GUARD_TO_POD] {
            let prog: &mut SchedClassifier = datapath.program(name)?;
            prog.load().map_err(program_error(name))?;
        }
        datapath.update_existing_guards()?;
        Ok((datapath, orig_dst))
    }

    fn program<'a, T>(&'a mut self, name: &'static str) -> Result<&'a mut T, Error>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        let prog = self.ebpf.program_mut(name).ok_or(Error::Program {
            name,
            source: aya::programs::ProgramError::NotLoaded,
        })?;
        prog.try_into().map_err(program_error(name))
    }

    /// Keeps a pinned link (swapping in this build's program) or creates and pins one.
    fn attach_or_update<T>(
        &mut self,
        name: &'static str,
        pin_name: &str,
        attach: impl FnOnce(&mut T) -> Result<FdLink, Error>,
    ) -> Result<(), Error>
    where
        for<'a> &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
        T: 'static,
    {
        let pin = self.links_dir.join(pin_name);
        let prog: &mut T = self.program(name)?;
        if pin.exists() {
            let prog_fd = program_fd(&self.ebpf, name)?;
            let link = sys::obj_get(&pin).map_err(|source| Error::Pin {
                what: "opening pinned link",
                path: pin.clone(),
                source,
            })?;
            sys::link_update(&link, prog_fd).map_err(|source| Error::Pin {
                what: "updating pinned link",
                path: pin.clone(),
                source,
            })?;
            tracing::info!(link = %pin.display(), "kept pinned link, now running this build's program");
            return Ok(());
        }
        let link = attach(prog)?;
        link.pin(&pin).map_err(|e| Error::Pin {
            what: "pinning link",
            path: pin.clone(),
            source: std::io::Error::other(e),
        })?;
        tracing::info!(link = %pin.display(), "attached and pinned");
        Ok(())
    }

    fn set_excluded(&mut self, cidrs: &[Ipv4Cidr]) -> Result<(), Error> {
        let err = |source| Error::Map {
            name: maps::EXCLUDED,
            source,
        };
        let stale: Vec<Key<u32>> = self.excluded.keys().filter_map(Result::ok).collect();
        for key in stale {
            self.excluded.remove(&key).map_err(err)?;
        }
        for cidr in cidrs {
            let key = Key::new(u32::from(cidr.prefix_len), u32::from(cidr.addr).to_be());
            self.excluded.insert(&key, 1, 0).map_err(err)?;
        }
        Ok(())
    }

    /// Starts capturing a pod: guards first (so nothing slips past while capture is being
    /// switched on), then the capture maps.
    pub fn enroll(&mut self, pod: &PodDatapath) -> Result<(), Error> {
        for (suffix, name, direction) in guard_kinds() {
            let pin = self.guard_pin(pod, suffix);
            if pin.exists() {
                continue;
            }
            let prog: &mut SchedClassifier = self.program(name)?;
            let id = prog
                .attach_with_options(
                    &pod.host_iface,
                    direction,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(|source| Error::Guard {
                    iface: pod.host_iface.clone(),
                    source,
                })?;
            let link = prog.take_link(id).map_err(program_error(name))?;
            let link = FdLink::try_from(link).map_err(|source| Error::Link { name, source })?;
            link.pin(&pin).map_err(|e| Error::Pin {
                what: "pinning guard",
                path: pin.clone(),
                source: std::io::Error::other(e),
            })?;
        }
        if self.non_tcp.get(&pod.host_ifindex, 0).is_err() {
            let zero =
                PerCpuValues::try_from(vec![NonTcpCounts::default(); nr_cpus()?]).map_err(|source| {
                    Error::Map {
                        name: maps::NON_TCP,
                        source: aya::maps::MapError::IoError(source),
                    }
                })?;
            self.non_tcp
                .insert(pod.host_ifindex, zero, 0)
                .map_err(|source| Error::Map {
                    name: maps::NON_TCP,
                    source,
                })?;
        }
        let ip = u32::from(pod.ip).to_be();
        self.enrolled_netns
            .insert(pod.netns_cookie, EnrolledPod { pod_ip: ip, _pad: 0 }, 0)
            .map_err(|source| Error::Map {
                name: maps::ENROLLED_NETNS,
                source,
            })?;
        self.enrolled_ips
            .insert(
                ip,
                EnrolledIp {
                    netns_cookie: pod.netns_cookie,
                },
                0,
            )
            .map_err(|source| Error::Map {
                name: maps::ENROLLED_IPS,
                source,
            })?;
        Ok(())
    }

    /// Stops capturing a pod: capture maps first, then the guards.
    pub fn unenroll(&mut self, pod: &PodDatapath) -> Result<(), Error> {
        self.forget_capture(pod.netns_cookie, pod.ip);
        let _ = self.non_tcp.remove(&pod.host_ifindex);
        for (suffix, _, _) in guard_kinds() {
            let pin = self.guard_pin(pod, suffix);
            remove_pin(&pin)?;
        }
        Ok(())
    }

    fn forget_capture(&mut self, cookie: u64, ip: Ipv4Addr) {
        // Missing entries are fine: the goal is their absence.
        let _ = self.enrolled_netns.remove(&cookie);
        let _ = self.enrolled_ips.remove(&u32::from(ip).to_be());
    }

    /// After a restart: drops capture entries and guards that belong to none of `keep`
    /// (pods that went away while the agent was down).
    pub fn retain(&mut self, keep: &[PodDatapath]) -> Result<(), Error> {
        let cookies: Vec<u64> = self.enrolled_netns.keys().filter_map(Result::ok).collect();
        for cookie in cookies {
            if !keep.iter().any(|p| p.netns_cookie == cookie) {
                let _ = self.enrolled_netns.remove(&cookie);
            }
        }
        let ips: Vec<u32> = self.enrolled_ips.keys().filter_map(Result::ok).collect();
        for ip in ips {
            if !keep.iter().any(|p| u32::from(p.ip).to_be() == ip) {
                let _ = self.enrolled_ips.remove(&ip);
            }
        }
        let wanted: Vec<PathBuf> = keep
            .iter()
            .flat_map(|p| guard_kinds().map(|(suffix, _, _)| self.guard_pin(p, suffix)))
            .collect();
        for pin in self.guard_pins() {
            if !wanted.contains(&pin) {
                remove_pin(&pin)?;
            }
        }
        Ok(())
    }

    fn guard_pin(&self, pod: &PodDatapath, suffix: &str) -> PathBuf {
        // The ifindex makes a pin for a deleted veth distinct from one for a new veth that
        // reuses its name.
        self.links_dir
            .join(format!("guard-{}-{}-{suffix}", pod.host_iface, pod.host_ifindex))
    }

    fn guard_pins(&self) -> Vec<PathBuf> {
        let Ok(dir) = fs::read_dir(&self.links_dir) else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("guard-"))
            })
            .collect()
    }

    fn update_existing_guards(&mut self) -> Result<(), Error> {
        for pin in self.guard_pins() {
            let name = if pin.to_string_lossy().ends_with("from-pod") {
                programs::GUARD_FROM_POD
            } else {
                programs::GUARD_TO_POD
            };
            let prog_fd = program_fd(&self.ebpf, name)?;
            let Ok(link) = sys::obj_get(&pin) else { continue };
            if let Err(e) = sys::link_update(&link, prog_fd) {
                // The veth is gone (the link is defunct); reconciliation removes the pin.
                tracing::debug!(pin = %pin.display(), error = %e, "guard link not updated");
            }
        }
        Ok(())
    }

    /// Counters summed over CPUs, by name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        counters::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let sum = self
                    .counters
                    .get(&(i as u32), 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                (*name, sum)
            })
            .collect()
    }

    /// Non-TCP packet counts per host-side veth ifindex, summed over CPUs.
    fn non_tcp(&self) -> std::collections::BTreeMap<u32, NonTcpCounts> {
        self.non_tcp
            .iter()
            .filter_map(Result::ok)
            .map(|(ifindex, per_cpu)| {
                let mut sum = NonTcpCounts::default();
                per_cpu.iter().for_each(|c| sum.add(c));
                (ifindex, sum)
            })
            .collect()
    }

    /// The live contents of every map, for the admin endpoint. `pods` names the pod behind
    /// each host-side veth ifindex.
    pub fn view(
        &self,
        orig_dst: &OrigDstTable,
        pods: &std::collections::HashMap<u32, String>,
    ) -> DatapathView {
        DatapathView {
            enrolled_netns: self
                .enrolled_netns
                .iter()
                .filter_map(Result::ok)
                .map(|(cookie, v)| (cookie, Ipv4Addr::from(u32::from_be(v.pod_ip))))
                .collect(),
            enrolled_ips: self
                .enrolled_ips
                .iter()
                .filter_map(Result::ok)
                .map(|(ip, v)| (Ipv4Addr::from(u32::from_be(ip)), v.netns_cookie))
                .collect(),
            pending: self
                .pending
                .iter()
                .filter_map(Result::ok)
                .map(|(cookie, o)| (cookie, OrigDstView::from(o)))
                .collect(),
            orig_dst: orig_dst
                .entries()
                .into_iter()
                .map(|(t, o)| {
                    let tuple = format!(
                        "{}:{} -> {}:{}",
                        Ipv4Addr::from(u32::from_be(t.src_ip)),
                        u16::from_be(t.src_port),
                        Ipv4Addr::from(u32::from_be(t.dst_ip)),
                        u16::from_be(t.dst_port)
                    );
                    (tuple, OrigDstView::from(o))
                })
                .collect(),
            excluded: self
                .excluded
                .keys()
                .filter_map(Result::ok)
                .map(|k| format!("{}/{}", Ipv4Addr::from(u32::from_be(k.data())), k.prefix_len()))
                .collect(),
            counters: self
                .counters()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            non_tcp: self
                .non_tcp()
                .into_iter()
                .map(|(ifindex, c)| {
                    let pod = pods
                        .get(&ifindex)
                        .cloned()
                        .unwrap_or_else(|| format!("ifindex {ifindex}"));
                    (pod, c)
                })
                .collect(),
            links: {
                let mut names: Vec<String> = fs::read_dir(&self.links_dir)
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                names
            },
        }
    }
}

fn guard_kinds() -> [(&'static str, &'static str, TcAttachType); 2] {
    [
        // Host-side veth ingress = packets leaving the pod.
        ("from-pod", programs::GUARD_FROM_POD, TcAttachType::Ingress),
        // Host-side veth egress = packets about to enter the pod.
        ("to-pod", programs::GUARD_TO_POD, TcAttachType::Egress),
    ]
}

/// The fd of a loaded program of the object, by name (errors name the program).
fn program_fd<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<std::os::fd::BorrowedFd<'a>, Error> {
    use std::os::fd::AsFd as _;
    let prog = ebpf.program(name).ok_or(Error::Program {
        name,
        source: aya::programs::ProgramError::NotLoaded,
    })?;
    prog.fd().map(|fd| fd.as_fd()).map_err(program_error(name))
}

/// Unpinning a link drops the last reference, which detaches it.
fn remove_pin(pin: &Path) -> Result<(), Error> {
    match fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Pin {
            what: "removing",
            path: pin.to_path_buf(),
            source,
        }),
    }
}

fn ensure_bpffs(dir: &Path) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| Error::NoBpffs(dir.into()))?;
    // SAFETY: statfs writes into the zeroed struct we pass.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0;
    if ok && st.f_type as i64 == BPF_FS_MAGIC {
        Ok(())
    } else {
        Err(Error::NoBpffs(dir.into()))
    }
}

/// Removes everything pinned under `bpffs_dir`: links first (which detaches the programs),
/// then maps. Used by `mesh-node uninstall`.
pub fn uninstall(bpffs_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut removed = Vec::new();
    for sub in ["links", "maps"] {
        let dir = bpffs_dir.join(sub);
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            remove_pin(&entry.path())?;
            removed.push(entry.path());
        }
        let _ = fs::remove_dir(&dir);
    }
    let _ = fs::remove_dir(bpffs_dir);
    Ok(removed)
}

#[derive(Debug, Serialize)]
pub struct OrigDstView {
    pub src_netns_cookie: u64,
    pub dst: String,
    pub direction: &'static str,
}

impl From<OrigDst> for OrigDstView {
    fn from(o: OrigDst) -> Self {
        Self {
            src_netns_cookie: o.src_netns_cookie,
            dst: format!(
                "{}:{}",
                Ipv4Addr::from(u32::from_be(o.dst_ip)),
                u16::from_be(o.dst_port)
            ),
            direction: direction_name(o.direction),
        }
    }
}

pub fn direction_name(direction: u8) -> &'static str {
    match direction {
        mesh_common::DIRECTION_OUTBOUND => "outbound",
        mesh_common::DIRECTION_INBOUND => "inbound",
        _ => "unknown",
    }
}

/// Live map contents.
#[derive(Debug, Serialize)]
pub struct DatapathView {
    pub enrolled_netns: Vec<(u64, Ipv4Addr)>,
    pub enrolled_ips: Vec<(Ipv4Addr, u64)>,
    pub pending: Vec<(u64, OrigDstView)>,
    pub orig_dst: Vec<(String, OrigDstView)>,
    pub excluded: Vec<String>,
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Non-TCP packets of each enrolled pod (not captured: STRICT covers TCP, as in Istio).
    pub non_tcp: std::collections::BTreeMap<String, NonTcpCounts>,
    pub links: Vec<String>,
}

fn nr_cpus() -> Result<usize, Error> {
    aya::util::nr_cpus().map_err(|(_, source)| Error::Pin {
        what: "counting possible CPUs in",
        path: PathBuf::from("/sys/devices/system/cpu/possible"),
        source,
    })
}
