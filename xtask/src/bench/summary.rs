//! The Markdown summary: medians over rounds per (workload, arm), added latency over the
//! direct arm, and per-request figures.

use std::collections::BTreeMap;

use super::{Environment, Idle, Row};

/// Markdown: medians over rounds per (workload, arm), and what each arm adds over direct.
pub fn summarize(
    rows: &[Row],
    idle: &Idle,
    synthetic: &[(usize, u64)],
    env: &Environment,
    profile: &str,
) -> String {
    // Rounds whose generator saturated its CPU measured the generator, not the arm: they are
    // discarded (still in results.jsonl, flagged), unless every round of the cell saturated.
    let mut all: BTreeMap<(String, &'static str), Vec<&Row>> = BTreeMap::new();
    for r in rows {
        all.entry((r.workload.clone(), r.arm)).or_default().push(r);
    }
    let mut by: BTreeMap<(String, &'static str), Vec<&Row>> = BTreeMap::new();
    let mut discarded: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
    for (key, rs) in all {
        let kept: Vec<&Row> = rs.iter().copied().filter(|r| !r.generator_saturated).collect();
        discarded.insert(key.clone(), rs.len() - kept.len());
        by.insert(key, if kept.is_empty() { rs } else { kept });
    }
    let mut md = format!(
        "Command {profile}; kernel {}, CPU {}, git {}. Medians over rounds. Latency in microseconds; \
         \"+p50/+p99\" is added over direct (ms). Proxy CPU in cores for both proxies together; \
         vCPU/krps = cores per 1,000 requests/s; switches/req = proxy context switches per \
         request (both proxies); MB/CPU-s = bulk bytes per proxy CPU-second. \
         mesh-node idle: RSS {:?} KiB, {:?} context switches/s; RSS with (synthetic workloads, KiB) on n1: {:?}.\n\n\
         | workload | arm | p50 | p90 | p99 | p99.9 | rate/s | +p50 ms | +p99 ms | proxy CPU | vCPU/krps | switches/req | RSS KiB | Gbit/s | MB/CPU-s | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        env.kernel,
        env.cpu_model,
        env.git_rev,
        idle.rss_kib,
        idle.switches_per_sec
            .iter()
            .map(|s| (s * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        synthetic
    );
    for ((workload, arm), rs) in &by {
        let m = |f: &dyn Fn(&Row) -> f64| median(rs.iter().map(|r| f(r)).collect());
        let direct = by.get(&(workload.clone(), "direct"));
        let dm = |f: &dyn Fn(&Row) -> f64| direct.map(|d| median(d.iter().map(|r| f(r)).collect()));
        let p50 = m(&|r| r.measured.p50_us as f64);
        let p99 = m(&|r| r.measured.p99_us as f64);
        let rate = m(&|r| r.measured.achieved_per_sec);
        let cpu = m(&|r| r.proxy_cpu);
        let added = |v: f64, d: Option<f64>| {
            d.map(|d| format!("{:+.3}", (v - d) / 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        let gbit = rs[0]
            .gbit_per_sec
            .map(|_| format!("{:.2}", m(&|r| r.gbit_per_sec.unwrap_or(0.0))))
            .unwrap_or_else(|| "-".into());
        let per_cpu_second = rs[0]
            .gbit_per_sec
            .filter(|_| cpu > 0.0)
            .map(|_| {
                format!(
                    "{:.0}",
                    m(&|r| r.gbit_per_sec.unwrap_or(0.0)) * 1e9 / 8.0 / 1e6 / cpu
                )
            })
            .unwrap_or_else(|| "-".into());
        let saturated = match discarded[&(workload.clone(), *arm)] {
            0 => String::new(),
            _ if rs.iter().all(|r| r.generator_saturated) => " (generator saturated in every round)".into(),
            n => format!(" ({n} generator-saturated rounds discarded)"),
        };
        md += &format!(
            "| {workload}{saturated} | {arm} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {:.3} | {} | {} | {} | {gbit} | {per_cpu_second} | {} |\n",
            p50,
            m(&|r| r.measured.p90_us as f64),
            p99,
            m(&|r| r.measured.p999_us as f64),
            rate,
            added(p50, dm(&|r| r.measured.p50_us as f64)),
            added(p99, dm(&|r| r.measured.p99_us as f64)),
            cpu,
            if rate > 0.0 { format!("{:.3}", cpu / rate * 1000.0) } else { "-".into() },
            if rate > 0.0 && cpu > 0.0 {
                format!("{:.1}", m(&|r| r.proxy_switches_per_sec) / rate)
            } else {
                "-".into()
            },
            rs.last().map(|r| format!("{:?}", r.proxy_rss_kib)).unwrap_or_default(),
            rs.iter().map(|r| r.measured.errors).sum::<u64>(),
        );
    }
    md
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
