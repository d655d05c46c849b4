//! Workload identity: the SPIFFE ID `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`,
//! the same shape Istio issues, so Istio-aware peers read it as they expect.

use std::{fmt, str::FromStr};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }
}

/// Serialised as the SPIFFE URI.
impl serde::Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a workload SPIFFE ID: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
)]
pub struct InvalidIdentity(pub String);

impl FromStr for Identity {
    type Err = InvalidIdentity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidIdentity(s.to_string());
        let rest = s.strip_prefix("spiffe://").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] if [td, ns, sa].iter().all(|p| valid_segment(p)) => {
                Ok(Self::new(td, ns, sa))
            }
            _ => Err(bad()),
        }
    }
}

/// Non-empty, and only the characters SPIFFE allows in a trust domain or path segment
/// (letters, digits, `.`, `-`, `_`).
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test]
    fn round_trips() {
        let id = Identity::new("cluster.local", "shop", "web-sa");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/web-sa");
        assert_eq!(id.to_string().parse::<Identity>(), Ok(id));
    }

    #[test_case("spiffe://cluster.local/ns/shop"; "no service account")]
    #[test_case("https://cluster.local/ns/shop/sa/web"; "wrong scheme")]
    #[test_case("spiffe://cluster.local/ns//sa/web"; "empty namespace")]
    #[test_case("spiffe://cluster.local/ns/shop/sa/web/extra"; "extra segment")]
    #[test_case("spiffe://cluster local/ns/shop/sa/web"; "space in trust domain")]
    fn rejects(s: &str) {
        assert_eq!(s.parse::<Identity>(), Err(InvalidIdentity(s.into())));
    }
}
