//! RequestAuthentication: which JWTs a workload accepts, and where it finds them
//! (<https://istio.io/latest/docs/reference/config/security/request_authentication/>,
//! `security/v1beta1/request_authentication.proto` in istio/api).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    check_attachment, check_non_empty, parse_duration, PolicyTargetReference, WorkloadSelector,
};
use crate::istio::FieldError;

/// RequestAuthentication defines what request authentication methods are supported by a
/// workload. See more details at:
/// https://istio.io/docs/reference/config/security/request_authentication.html
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestAuthenticationSpec {
    /// Workloads of this namespace (all namespaces from the root namespace) the policy applies
    /// to; all of them when unset. At most one of selector, targetRef and targetRefs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A single resource the policy attaches to (hidden in Istio's docs; use targetRefs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources the policy attaches to: Gateway, GatewayClass, Service, ServiceEntry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The JWTs the selected workloads validate; a request presenting an invalid one is rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// How to validate one issuer's JWTs and where to find them in a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtRule {
    /// The issuer (`iss` claim) of the tokens, e.g. `https://foobar.auth0.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` claims; the service name when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// URL of the issuer's public key set (JWKS). Only one of jwksUri and jwks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// `jwks_uri`, the spelling Istio's CRD also accepts; kept apart so it round-trips.
    #[serde(default, rename = "jwks_uri", skip_serializing_if = "Option::is_none")]
    pub jwks_uri_snake: Option<String>,
    /// The public key set inline, as JSON. Only one of jwksUri and jwks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers that carry the token (default: `Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters that carry the token (default: `access_token`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Header to receive the verified payload, base64-encoded JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Cookies that carry the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Keep the token in the request sent upstream (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Claims copied to request headers after verification (experimental).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long to wait for the JWKS to be fetched (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Claims split on whitespace for matching, besides `scope` and `permission`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// Whether a request must carry a token of this rule (`REQUIRED`) or may carry none
    /// (`OPTIONAL`, Istio's behaviour when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<JwtPresence>,
}

/// `JWTRule.presence`, added in Istio 1.29 (the CRD's enum: `OPTIONAL`, `REQUIRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum JwtPresence {
    /// A request without a token passes this rule (authorization may still require one).
    Optional,
    /// A request without a token is rejected.
    Required,
}

impl JwtRule {
    /// The JWKS URL, whichever spelling was used.
    pub fn jwks_url(&self) -> Option<&str> {
        self.jwks_uri.as_deref().or(self.jwks_uri_snake.as_deref())
    }
}

/// A header carrying a JWT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtHeader {
    /// The header name.
    pub name: String,
    /// Prefix stripped before decoding, e.g. `"Bearer "`; a value without it is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// One claim copied to one header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimToHeader {
    /// The header to set (overwritten if present); `[-_A-Za-z0-9]+`.
    pub header: String,
    /// The claim to copy (string, integer or boolean; nested as `a.b.c`).
    pub claim: String,
}

impl RequestAuthenticationSpec {
    /// Istio's `ValidateRequestAuthentication`.
    pub fn field_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_attachment(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            &mut errors,
        );
        for (i, rule) in self.jwt_rules.iter().enumerate() {
            rule.check(&format!("spec.jwtRules[{i}]"), &mut errors);
        }
        errors
    }
}

impl JwtRule {
    fn check(&self, path: &str, errors: &mut Vec<FieldError>) {
        let mut error = |field: String, message: String| errors.push(FieldError::new(field, message));
        let empty = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
        if empty(&self.issuer) && self.jwks_url().is_none_or(str::is_empty) {
            error(
                format!("{path}.issuer"),
                "set the issuer (the tokens' `iss` claim) or jwksUri".into(),
            );
        }
        if self.issuer.as_deref() == Some("") {
            error(
                format!("{path}.issuer"),
                "empty issuer: remove it or fill it in".into(),
            );
        }
        let sources: Vec<&str> = [
            (self.jwks_uri.is_some(), "jwksUri"),
            (self.jwks_uri_snake.is_some(), "jwks_uri"),
            (self.jwks.is_some(), "jwks"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if sources.len() > 1 {
            error(
                format!("{path}.{}", sources[1]),
                format!(
                    "only one of jwksUri and jwks may be set, found {}",
                    sources.join(" and ")
                ),
            );
        }
        for (field, url) in [("jwksUri", &self.jwks_uri), ("jwks_uri", &self.jwks_uri_snake)] {
            if let Some(url) = url {
                if let Err(m) = check_url(url) {
                    error(format!("{path}.{field}"), m);
                }
            }
        }
        if let Some(jwks) = &self.jwks {
            if let Err(m) = check_jwks(jwks) {
                error(format!("{path}.jwks"), m);
            }
        }
        for (i, h) in self.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                error(
                    format!("{path}.fromHeaders[{i}].name"),
                    "name the header that carries the token".into(),
                );
            }
        }
        for (i, c) in self.output_claim_to_headers.iter().enumerate() {
            let at = format!("{path}.outputClaimToHeaders[{i}]");
            if c.claim.is_empty() {
                error(format!("{at}.claim"), "name the claim to copy".into());
            }
            if c.header.is_empty()
                || !c
                    .header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                error(
                    format!("{at}.header"),
                    format!(
                        "{:?} is not a header name Istio accepts here: letters, digits, `-` and `_`",
                        c.header
                    ),
                );
            }
        }
        if let Some(t) = &self.timeout {
            match parse_duration(t) {
                Err(m) => error(format!("{path}.timeout"), m),
                Ok(ns) if ns < 1_000_000 => {
                    error(format!("{path}.timeout"), format!("{t:?} is shorter than 1ms"))
                }
                Ok(ns) if ns % 1_000_000 != 0 => error(
                    format!("{path}.timeout"),
                    format!("{t:?}: only millisecond precision is supported"),
                ),
                Ok(_) => {}
            }
        }
        if self.space_delimited_claims.len() > 64 {
            error(format!("{path}.spaceDelimitedClaims"), "at most 64 claims".into());
        }
        for (field, values) in [
            ("audiences", &self.audiences),
            ("fromParams", &self.from_params),
            ("fromCookies", &self.from_cookies),
            ("spaceDelimitedClaims", &self.space_delimited_claims),
        ] {
            check_non_empty(&format!("{path}.{field}"), values, errors);
        }
    }
}

/// An http or https URL with a host (Istio's `ParseJwksURI`).
fn check_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL: use http://... or https://..."))?;
    if !matches!(scheme, "http" | "https") {
        return Err(format!(
            "URL scheme {scheme:?} is not supported: use http or https"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match host.strip_prefix('[') {
        Some(v6) => v6
            .split_once(']')
            .map(|(h, p)| (h, p.strip_prefix(':')))
            .unwrap_or((v6, None)),
        None => host.split_once(':').map_or((host, None), |(h, p)| (h, Some(p))),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(format!("{url:?} has an invalid port"));
    }
    if url.len() > 2048 {
        return Err("a JWKS URL has at most 2048 characters".into());
    }
    Ok(())
}

/// A JSON Web Key Set (RFC 7517: an object with a `keys` array of objects with `kty`), or a
/// single key, as Istio's `jwk.Parse` accepts.
fn check_jwks(jwks: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(jwks).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    let keys = match value.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
        Some(_) => return Err("not a JSON Web Key Set: `keys` must be an array".into()),
        None => vec![&value],
    };
    if let Some(i) = keys
        .iter()
        .position(|k| !k.get("kty").is_some_and(|t| t.is_string()))
    {
        return Err(format!("not a JSON Web Key Set: key {i} has no `kty`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn errors(rule: &str) -> Vec<String> {
        let spec: RequestAuthenticationSpec =
            serde_yaml_ng::from_str(&format!("jwtRules:\n- {rule}")).expect("parses");
        spec.field_errors().into_iter().map(|e| e.path).collect()
    }

    const OK: &[&str] = &[];

    #[test_case("{issuer: a, jwksUri: 'https://example.com/jwks.json'}" => OK; "issuer and jwksUri")]
    #[test_case("{issuer: a, presence: REQUIRED}" => OK; "presence required")]
    #[test_case("{issuer: a, presence: OPTIONAL}" => OK; "presence optional")]
    #[test_case("{jwksUri: 'https://example.com/jwks.json'}" => OK; "jwksUri alone")]
    #[test_case("{issuer: a, jwks_uri: 'http://example.com:8080/jwks'}" => OK; "snake case spelling")]
    #[test_case("{audiences: [x]}" => ["spec.jwtRules[0].issuer"]; "neither issuer nor jwksUri")]
    #[test_case("{issuer: ''}" => ["spec.jwtRules[0].issuer", "spec.jwtRules[0].issuer"]; "empty issuer")]
    #[test_case("{issuer: a, jwksUri: 'ftp://example.com/k'}" => ["spec.jwtRules[0].jwksUri"]; "ftp scheme")]
    #[test_case("{issuer: a, jwksUri: 'example.com/k'}" => ["spec.jwtRules[0].jwksUri"]; "no scheme")]
    #[test_case("{issuer: a, jwksUri: 'https:///k'}" => ["spec.jwtRules[0].jwksUri"]; "no host")]
    #[test_case("{issuer: a, jwksUri: 'https://e.com/k', jwks: '{\"keys\": []}'}" => ["spec.jwtRules[0].jwks"]; "jwks and jwksUri")]
    #[test_case("{issuer: a, jwks: '{\"keys\": [{\"kty\": \"RSA\"}]}'}" => OK; "inline jwks")]
    #[test_case("{issuer: a, jwks: 'not json'}" => ["spec.jwtRules[0].jwks"]; "jwks not json")]
    #[test_case("{issuer: a, jwks: '{\"keys\": [{}]}'}" => ["spec.jwtRules[0].jwks"]; "jwks key without kty")]
    #[test_case("{issuer: a, fromHeaders: [{name: ''}]}" => ["spec.jwtRules[0].fromHeaders[0].name"]; "empty header name")]
    #[test_case("{issuer: a, fromHeaders: [{name: x-jwt, prefix: 'Bearer '}]}" => OK; "header with prefix")]
    #[test_case("{issuer: a, fromParams: ['']}" => ["spec.jwtRules[0].fromParams[0]"]; "empty param")]
    #[test_case("{issuer: a, fromCookies: [c, '']}" => ["spec.jwtRules[0].fromCookies[1]"]; "empty cookie")]
    #[test_case("{issuer: a, audiences: ['']}" => ["spec.jwtRules[0].audiences[0]"]; "empty audience")]
    #[test_case("{issuer: a, outputClaimToHeaders: [{header: x-claim_1, claim: sub}]}" => OK; "claim to header")]
    #[test_case("{issuer: a, outputClaimToHeaders: [{header: 'x claim', claim: sub}]}" => ["spec.jwtRules[0].outputClaimToHeaders[0].header"]; "header with a space")]
    #[test_case("{issuer: a, outputClaimToHeaders: [{header: x, claim: ''}]}" => ["spec.jwtRules[0].outputClaimToHeaders[0].claim"]; "empty claim")]
    #[test_case("{issuer: a, timeout: 10s}" => OK; "timeout")]
    #[test_case("{issuer: a, timeout: 1.5s}" => OK; "fractional timeout")]
    #[test_case("{issuer: a, timeout: 500us}" => ["spec.jwtRules[0].timeout"]; "timeout under 1ms")]
    #[test_case("{issuer: a, timeout: 1500us}" => ["spec.jwtRules[0].timeout"]; "timeout below ms precision")]
    #[test_case("{issuer: a, timeout: ten}" => ["spec.jwtRules[0].timeout"]; "timeout not a duration")]
    #[test_case("{issuer: a, spaceDelimitedClaims: ['']}" => ["spec.jwtRules[0].spaceDelimitedClaims[0]"]; "empty space delimited claim")]
    fn jwt_rules(rule: &str) -> Vec<String> {
        errors(rule)
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_yaml_ng::from_str::<RequestAuthenticationSpec>("jwtRules: [{issuer: a, jwksURI: x}]")
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `jwksURI`"), "{e}");
    }

    #[test]
    fn presence_is_optional_or_required() {
        let err = serde_yaml_ng::from_str::<RequestAuthenticationSpec>(
            "jwtRules: [{issuer: a, presence: MANDATORY}]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant `MANDATORY`"), "{err}");
    }
}
