//! One PeerAuthentication decision among 10,000 policies (the node makes one per plaintext
//! connection). `cargo bench -p mesh-api`.

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion};
use mesh_api::peer_authentication::{
    Mode, MutualTls, PeerAuthentication, PeerAuthenticationSpec, PeerAuthentications, Target,
    WorkloadSelector,
};

fn policies(n: usize) -> Vec<PeerAuthentication> {
    (0..n)
        .map(|i| {
            let namespace = format!("ns-{}", i % 500);
            let selector = (i % 3 != 0).then(|| WorkloadSelector {
                match_labels: [("app".to_string(), format!("app-{}", i % 40))].into(),
            });
            PeerAuthentication {
                meta: mesh_api::objects::Meta {
                    order: i,
                    ..mesh_api::objects::Meta::named(&namespace, &format!("p-{i}"))
                },
                spec: PeerAuthenticationSpec {
                    port_level_mtls: if selector.is_some() {
                        [(
                            8080,
                            MutualTls {
                                mode: Mode::Permissive,
                            },
                        )]
                        .into()
                    } else {
                        BTreeMap::new()
                    },
                    selector,
                    mtls: Some(MutualTls {
                        mode: if i % 2 == 0 {
                            Mode::Strict
                        } else {
                            Mode::Permissive
                        },
                    }),
                },
            }
        })
        .collect()
}

fn decision(c: &mut Criterion) {
    let all = PeerAuthentications::new(policies(10_000));
    let labels: BTreeMap<String, String> = [("app".to_string(), "app-7".to_string())].into();
    let target = Target {
        namespace: "ns-7",
        labels: &labels,
        port: 8080,
    };
    c.bench_function("peer_authentication decision, 10k policies", |b| {
        b.iter(|| std::hint::black_box(&all).effective("istio-system", std::hint::black_box(&target)))
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);
