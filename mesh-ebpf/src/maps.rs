//! Maps shared by the programs. Names, layouts and meaning are defined once in `mesh-common`;
//! every map is pinned by name so an agent restart keeps the datapath and its state.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use mesh_common::{
    counters, EnrolledIp, EnrolledPod, Ipv4Prefix, NonTcpCounts, OrigDst, ProxyConfig, SockTuple,
};

/// Pods on one node: a few hundred in practice; 16k leaves room for churn.
const MAX_PODS: u32 = 16_384;
/// In-flight captured connects. LRU so entries of connects that never completed (the SYN
/// was never sent, the proxy never accepted) age out instead of filling the map.
const MAX_IN_FLIGHT: u32 = 65_536;

#[map(name = "ENROLLED_NETNS")]
pub static ENROLLED_NETNS: HashMap<u64, EnrolledPod> = HashMap::pinned(MAX_PODS, 0);

#[map(name = "ENROLLED_IPS")]
pub static ENROLLED_IPS: HashMap<u32, EnrolledIp> = HashMap::pinned(MAX_PODS, 0);

#[map(name = "PENDING")]
pub static PENDING: LruHashMap<u64, OrigDst> = LruHashMap::pinned(MAX_IN_FLIGHT, 0);

#[map(name = "ORIG_DST")]
pub static ORIG_DST: LruHashMap<SockTuple, OrigDst> = LruHashMap::pinned(MAX_IN_FLIGHT, 0);

#[map(name = "EXCLUDED")]
pub static EXCLUDED: LpmTrie<Ipv4Prefix, u8> = LpmTrie::pinned(1024, 0);

#[map(name = "PROXY_CONFIG")]
pub static PROXY_CONFIG: Array<ProxyConfig> = Array::pinned(1, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(counters::COUNT, 0);

#[map(name = "NON_TCP")]
pub static NON_TCP: PerCpuHashMap<u32, NonTcpCounts> = PerCpuHashMap::pinned(MAX_PODS, 0);

/// The proxy configuration, once user space has written it.
#[inline(always)]
pub fn proxy_config() -> Option<&'static ProxyConfig> {
    PROXY_CONFIG.get(0).filter(|c| c.ready != 0)
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Whether `ip` (network order) falls in a prefix enrolled pods reach directly.
#[inline(always)]
pub fn is_excluded(ip: u32) -> bool {
    EXCLUDED.get(aya_ebpf::maps::lpm_trie::Key::new(32, ip)).is_some()
}
