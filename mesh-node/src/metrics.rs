//! Prometheus metrics (`GET /metrics` on the admin endpoint), collected when scraped from
//! the state the node already keeps, so nothing on the data path pays for them.

use prometheus_client::{encoding::text::encode, metrics::gauge::Gauge, registry::Registry};

use crate::control::ControlStatus;

/// The text exposition of the node's metrics.
pub fn render(control: &ControlStatus) -> String {
    let mut registry = Registry::with_prefix("trellis");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let g = Gauge::<i64>::default();
        g.set(value);
        registry.register(name, help, g);
    };
    gauge(
        &mut registry,
        "config_version",
        "Version of the controller's config this node enforces (0: none yet)",
        i64::try_from(control.version).unwrap_or(i64::MAX),
    );
    let age = control
        .applied_at
        .and_then(|t| t.elapsed().ok())
        .map_or(-1, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    gauge(
        &mut registry,
        "config_age_seconds",
        "Seconds since the config in force was applied (-1: none yet)",
        age,
    );
    gauge(
        &mut registry,
        "config_connected",
        "1 while the config stream to the controller is open",
        i64::from(control.connected),
    );
    gauge(
        &mut registry,
        "config_nacks",
        "Config updates refused since start",
        i64::try_from(control.nacks).unwrap_or(i64::MAX),
    );
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_config_version_and_age() {
        let status = ControlStatus {
            connected: true,
            version: 7,
            applied_at: Some(std::time::SystemTime::now()),
            ..ControlStatus::default()
        };
        let text = render(&status);
        assert!(text.contains("trellis_config_version 7\n"), "{text}");
        assert!(text.contains("trellis_config_age_seconds 0\n"), "{text}");
        assert!(text.contains("trellis_config_connected 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
