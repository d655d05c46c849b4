//! Bootstrap tokens (standalone): a file maps each node's name to a token of its own, and a
//! node proves who it is by presenting it.

use std::{collections::BTreeMap, path::Path};

use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node tokens file {path}: {message}")]
    Tokens { path: String, message: String },
}

/// Bootstrap tokens, by node name.
pub struct NodeTokens {
    /// SHA-256 of each node's token: what a presented token is compared with.
    by_node: BTreeMap<String, Digest>,
}

/// SHA-256 of a token. Comparing digests rather than the tokens makes every comparison
/// the same length, so neither a token's length nor a common prefix shows in the time a
/// refusal takes.
pub type Digest = [u8; 32];

pub fn digest(token: &str) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("SHA-256 digests are 32 bytes")
}

impl NodeTokens {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let err = |message: String| Error::Tokens {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let tokens: BTreeMap<String, String> = serde_yaml_ng::from_str(&text)
            .map_err(|e| err(format!("expected a YAML map of node name to token: {e}")))?;
        Self::new(tokens).map_err(err)
    }

    /// Checks and hashes the tokens (node name to token). Refuses short tokens, and a token
    /// shared by two nodes: either node could then pass for the other, and the CA would sign
    /// the other's identities for it.
    pub fn new(tokens: BTreeMap<String, String>) -> Result<Self, String> {
        let mut by_digest: BTreeMap<Digest, &str> = BTreeMap::new();
        for (node, token) in &tokens {
            if token.len() < 16 {
                return Err(format!("the token of node {node} is shorter than 16 characters"));
            }
            if let Some(first) = by_digest.insert(digest(token), node) {
                return Err(format!(
                    "nodes {first} and {node} have the same token: every node needs a token of its own"
                ));
            }
        }
        let by_node = tokens
            .iter()
            .map(|(node, token)| (node.clone(), digest(token)))
            .collect();
        Ok(Self { by_node })
    }

    /// The node a token belongs to. Compares the token's digest with every node's in
    /// constant time (`subtle`), and does not stop at a match, so the time taken says
    /// nothing about which token or how much of it matched.
    pub fn node_for(&self, token: &str) -> Option<&str> {
        let presented = digest(token);
        let mut found = None;
        for (node, expected) in &self.by_node {
            if bool::from(expected.ct_eq(&presented)) {
                found = Some(node.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_identify_nodes() {
        let path = std::env::temp_dir().join(format!("trellis-tokens-{}", std::process::id()));
        std::fs::write(&path, "n1: aaaaaaaaaaaaaaaaaaaa\nn2: bbbbbbbbbbbbbbbbbbbb\n").unwrap();
        let tokens = NodeTokens::load(&path).unwrap();
        assert_eq!(tokens.node_for("aaaaaaaaaaaaaaaaaaaa"), Some("n1"));
        assert_eq!(tokens.node_for("bbbbbbbbbbbbbbbbbbbb"), Some("n2"));
        // Same length, one byte off; a prefix; a longer token that starts with a real one;
        // nothing at all.
        assert_eq!(tokens.node_for("bbbbbbbbbbbbbbbbbbbX"), None);
        assert_eq!(tokens.node_for("bbbbbbbbbbbbbbbbbbb"), None);
        assert_eq!(tokens.node_for("bbbbbbbbbbbbbbbbbbbbb"), None);
        assert_eq!(tokens.node_for(""), None);
        std::fs::write(&path, "n1: short\n").unwrap();
        let err = NodeTokens::load(&path).err().unwrap().to_string();
        assert!(err.contains("shorter than 16"), "{err}");
        assert!(err.contains(&path.display().to_string()), "names the file: {err}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_token_shared_by_two_nodes_is_refused_naming_both() {
        let tokens = |pairs: &[(&str, &str)]| {
            NodeTokens::new(
                pairs
                    .iter()
                    .map(|(n, t)| (n.to_string(), t.to_string()))
                    .collect(),
            )
        };
        let err = tokens(&[
            ("n1", "aaaaaaaaaaaaaaaaaaaa"),
            ("n2", "bbbbbbbbbbbbbbbbbbbb"),
            ("n3", "aaaaaaaaaaaaaaaaaaaa"),
        ])
        .err()
        .unwrap();
        assert!(err.contains("nodes n1 and n3 have the same token"), "{err}");
        // Distinct tokens, even one a prefix of another, are fine.
        assert!(tokens(&[("n1", "aaaaaaaaaaaaaaaaaaaa"), ("n2", "aaaaaaaaaaaaaaaaaaaab")]).is_ok());
    }
}
