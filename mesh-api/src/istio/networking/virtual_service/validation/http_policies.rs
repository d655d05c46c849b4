//! Istio's checks of the per-route policies of an HTTP route: header operations, CORS, fault
//! injection, redirects and retries.

use super::*;

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Header names and values of `headers` (`ValidateHTTPHeader*OperationName`).
pub(super) fn validate_headers(e: &mut Errors, path: &str, headers: Option<&Headers>) {
    let Some(h) = headers else { return };
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        let request = side == "request";
        for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let p = format!("{path}.{side}.{field}.{name}");
                let authority = name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host");
                if request && authority {
                    // Allowed: the authority may be rewritten (once).
                } else if name.eq_ignore_ascii_case("host") {
                    e.add(&p, "cannot set the Host header here");
                } else if name.starts_with(':') {
                    e.add(
                        &p,
                        format!("invalid header {name:?}: header cannot have \":\" prefix"),
                    );
                }
                if value.bytes().any(|c| (c < 0x20 && c != b'\t') || c == 0x7f) {
                    e.add(&p, "header value must not contain control characters");
                }
            }
        }
        for (k, name) in ops.remove.iter().enumerate() {
            if name.is_empty() || name.starts_with(':') || name.eq_ignore_ascii_case("host") {
                e.add(
                    format!("{path}.{side}.remove[{k}]"),
                    format!("header {name:?} cannot be removed: pseudo-headers and Host are not allowed"),
                );
            }
        }
    }
}

pub(super) fn validate_cors(e: &mut Errors, path: &str, cors: &CorsPolicy) {
    for (k, o) in cors.allow_origins.iter().enumerate() {
        let p = format!("{path}.allowOrigins[{k}]");
        match o {
            StringMatch::Exact(s) | StringMatch::Prefix(s) if s.is_empty() => {
                e.add(p, "an empty string is not a valid match for CORS allow origins")
            }
            StringMatch::Regex(re) => e.check(p, check_regex(re)),
            _ => {}
        }
    }
    for (k, m) in cors.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&m.as_str()) {
            e.add(
                format!("{path}.allowMethods[{k}]"),
                format!("{m:?} is not a supported HTTP method: use GET, POST, PUT, ... in upper case"),
            );
        }
    }
    for (field, names) in [
        ("allowHeaders", &cors.allow_headers),
        ("exposeHeaders", &cors.expose_headers),
    ] {
        for (k, n) in names.iter().enumerate() {
            if n != "*" && !is_token(n) {
                e.add(
                    format!("{path}.{field}[{k}]"),
                    format!("header name {n:?} is not a valid header name"),
                );
            }
        }
    }
    if let Some(max_age) = &cors.max_age {
        e.duration(format!("{path}.maxAge"), Some(max_age));
        if max_age.nanos().is_ok_and(|n| n % 1_000_000_000 != 0) {
            e.add(
                format!("{path}.maxAge"),
                "maxAge is accurate to seconds only: use whole seconds",
            );
        }
    }
}

pub(super) fn validate_fault(e: &mut Errors, path: &str, fault: &HttpFaultInjection) {
    if fault.abort.is_none() && fault.delay.is_none() {
        e.add(path, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = &fault.abort {
        if let Some(p) = &a.percentage {
            e.check(format!("{path}.abort.percentage.value"), check_percentage(p));
        }
        match &a.error {
            Some(AbortError::HttpStatus(s)) => e.check(
                format!("{path}.abort.httpStatus"),
                check_http_status(i64::from(*s)),
            ),
            Some(AbortError::GrpcStatus(s)) if !GRPC_STATUSES.contains(&s.as_str()) => e.add(
                format!("{path}.abort.grpcStatus"),
                format!("gRPC status {s:?} is not supported: use a name such as NOT_FOUND or UNAVAILABLE"),
            ),
            Some(AbortError::Http2Error(_)) => e.add(
                format!("{path}.abort.http2Error"),
                "HTTP/2 abort fault injection is not supported yet by Istio",
            ),
            _ => {}
        }
    }
    if let Some(d) = &fault.delay {
        if let Some(p) = &d.percentage {
            e.check(format!("{path}.delay.percentage.value"), check_percentage(p));
        }
        if let Some(p) = d.percent.filter(|p| !(0..=100).contains(p)) {
            e.add(
                format!("{path}.delay.percent"),
                format!("percentage {p} is not in range 0..100"),
            );
        }
        match &d.delay {
            Some(DelayType::FixedDelay(x)) => e.duration(format!("{path}.delay.fixedDelay"), Some(x)),
            Some(DelayType::ExponentialDelay(_)) => e.add(
                format!("{path}.delay.exponentialDelay"),
                "exponentialDelay is not supported yet by Istio: use fixedDelay",
            ),
            None => {}
        }
    }
}

pub(super) fn check_http_status(status: i64) -> Result<(), String> {
    if (200..=600).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP status {status} is not in range 200-599"))
    }
}

pub(super) fn validate_redirect(e: &mut Errors, path: &str, r: &HttpRedirect, matches: &[HttpMatchRequest]) {
    if r.uri.is_some() && r.prefix_rewrite.is_some() {
        e.add(path, "redirect may only specify one of uri or prefixRewrite");
    }
    if r.prefix_rewrite.is_some()
        && matches.iter().any(|m| {
            m.uri
                .as_ref()
                .is_some_and(|u| !matches!(u, StringMatch::Prefix(_)))
        })
    {
        e.add(
            format!("{path}.prefixRewrite"),
            "redirect prefixRewrite requires all URI matches to use prefix match type",
        );
    }
    if r.uri.is_none()
        && r.prefix_rewrite.is_none()
        && r.authority.is_none()
        && r.redirect_port.is_none()
        && r.scheme.is_none()
    {
        e.add(path, "redirect must specify uri, authority, scheme, or port");
    }
    if let Some(code) = r.redirect_code.filter(|c| !(300..=399).contains(c)) {
        e.add(
            format!("{path}.redirectCode"),
            format!("{code} is not a valid redirect code, must be 3xx"),
        );
    }
    if let Some(s) = r.scheme.as_deref().filter(|s| !matches!(*s, "http" | "https")) {
        e.add(
            format!("{path}.scheme"),
            format!("invalid redirect scheme {s:?}, must be \"http\" or \"https\""),
        );
    }
    if let Some(RedirectPort::Port(p)) = r.redirect_port {
        e.check(format!("{path}.port"), check_port(p));
    }
}

pub(super) fn validate_retry(e: &mut Errors, path: &str, r: &HttpRetry) {
    let attempts = r.attempts.unwrap_or(0);
    if attempts < 0 {
        e.add(format!("{path}.attempts"), "attempts cannot be negative");
    }
    if attempts == 0
        && (r.per_try_timeout.is_some() || r.retry_on.is_some() || r.retry_remote_localities.is_some())
    {
        e.add(
            path,
            "retry policy configured while attempts is 0 (disabled): set attempts",
        );
    }
    e.duration(format!("{path}.perTryTimeout"), r.per_try_timeout.as_ref());
    for policy in r.retry_on.iter().flat_map(|s| s.split(',')) {
        let status = policy.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
        if !status && !RETRY_ON.contains(&policy) {
            e.add(format!("{path}.retryOn"), format!("{policy:?} is not a valid retryOn policy: use e.g. 5xx,gateway-error,connect-failure or status codes"));
        }
    }
    e.duration(format!("{path}.backoff"), r.backoff.as_ref());
}
