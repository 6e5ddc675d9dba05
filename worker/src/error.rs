//! Typed errors for everything that crosses a service boundary.
//!
//! Every error answers two questions the saga engine must ask: *may this be
//! retried?* ([`Error::is_retryable`]) and *may the failed call have taken
//! effect anyway?* ([`Error::may_have_applied`]). The second matters for the
//! compensation rule: a `PATCH` to Auth0 that timed out may have landed, so
//! the new key can no longer be assumed unused.
//!
//! Error strings never contain secrets. Connectors build these values from
//! service error codes and messages, never from request bodies.

use std::time::Duration;

/// The library's error type. `anyhow` is used only in `main` and the CLI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS SDK call failed. `code`/`message` come from the service's
    /// error metadata; `request_id` is kept so an operator can quote it to
    /// AWS support.
    #[error("AWS {service}.{operation} failed: {code}: {message}{}", request_id.as_deref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
    Aws { service: &'static str, operation: &'static str, code: String, message: String, request_id: Option<String>, retryable: bool },

    /// An HTTP API (Auth0, Graph) answered with an error status.
    #[error("{service} {operation} answered HTTP {status} {code}: {message}")]
    Http {
        service: &'static str,
        operation: &'static str,
        status: u16,
        code: String,
        message: String,
        /// Server-requested wait (`Retry-After`, `x-ratelimit-reset`).
        retry_after: Option<Duration>,
        /// True for writes whose outcome is unknown (5xx after the request
        /// was sent).
        may_have_applied: bool,
    },

    /// The request never got an HTTP answer: connect failure, reset, timeout.
    #[error("{service} {operation}: {message}")]
    Transport { service: &'static str, operation: &'static str, message: String, may_have_applied: bool },

    /// The TLS handshake failed (an untrusted or expired certificate, a
    /// name mismatch, a server that does not speak TLS). `message` keeps the
    /// cause (the error's source chain). Never retried: trying again meets
    /// the same certificate; an operator must look.
    #[error("{service} {operation}: TLS failed: {message}")]
    Tls { service: &'static str, operation: &'static str, message: String },

    /// A domain rule stopped the step (e.g. the user already has two keys,
    /// the old key was used after the switch). Never retried.
    #[error("{code}: {message}")]
    Refused { code: &'static str, message: String },

    /// A transient domain condition (e.g. a new key that does not
    /// authenticate yet). Retried by the saga.
    #[error("{code}: {message}")]
    NotYet { code: &'static str, message: String },

    /// Invalid configuration or input. Never retried.
    #[error("{0}")]
    Config(String),

    /// The saga store lost a conditional write race: another worker moved
    /// the saga first. Not an error of the step; the caller drops its work.
    #[error("saga {saga_id} changed under us (expected version {expected})")]
    Conflict { saga_id: String, expected: u64 },

    /// Stored data that cannot be decoded (corrupt item, unknown schema).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Remove `secret` from every message this error carries. Connectors call
    /// it on errors of requests that sent a secret: a vendor's validation
    /// error may quote the payload back, and error messages reach the saga
    /// history, logs and notifications.
    pub fn redact(self, secret: &str) -> Error {
        if secret.is_empty() {
            return self;
        }
        let r = |m: String| m.replace(secret, "[REDACTED]");
        match self {
            Error::Aws { service, operation, code, message, request_id, retryable } => {
                Error::Aws { service, operation, code: r(code), message: r(message), request_id, retryable }
            }
            Error::Http { service, operation, status, code, message, retry_after, may_have_applied } => {
                Error::Http { service, operation, status, code: r(code), message: r(message), retry_after, may_have_applied }
            }
            Error::Transport { service, operation, message, may_have_applied } => {
                Error::Transport { service, operation, message: r(message), may_have_applied }
            }
            Error::Tls { service, operation, message } => Error::Tls { service, operation, message: r(message) },
            Error::Refused { code, message } => Error::Refused { code, message: r(message) },
            Error::NotYet { code, message } => Error::NotYet { code, message: r(message) },
            Error::Config(m) => Error::Config(r(m)),
            Error::Corrupt(m) => Error::Corrupt(r(m)),
            other @ Error::Conflict { .. } => other,
        }
    }

    /// Whether the same call may succeed if simply tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Aws { retryable, .. } => *retryable,
            Error::Http { status, .. } => *status == 429 || *status >= 500 || *status == 408,
            Error::Transport { .. } | Error::NotYet { .. } => true,
            Error::Tls { .. } | Error::Refused { .. } | Error::Config(_) | Error::Conflict { .. } | Error::Corrupt(_) => false,
        }
    }

    /// Whether a failed write may nevertheless have taken effect.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Error::Http { may_have_applied, .. } | Error::Transport { may_have_applied, .. } => *may_have_applied,
            _ => false,
        }
    }

    /// Wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short machine-readable code for history, notifications and metrics.
    pub fn code(&self) -> String {
        match self {
            Error::Aws { code, .. } | Error::Http { code, .. } => code.clone(),
            Error::Transport { .. } => "Transport".into(),
            Error::Tls { .. } => "TlsFailure".into(),
            Error::Refused { code, .. } | Error::NotYet { code, .. } => (*code).into(),
            Error::Config(_) => "InvalidConfiguration".into(),
            Error::Conflict { .. } => "Conflict".into(),
            Error::Corrupt(_) => "CorruptData".into(),
        }
    }

    /// Whether an operator (rather than waiting) is what fixes it: wrong
    /// permissions, wrong client secret, a refused precondition.
    pub fn operator_fixable(&self) -> bool {
        match self {
            Error::Http { status, .. } => matches!(status, 400 | 401 | 403 | 404),
            Error::Aws { code, .. } => matches!(
                code.as_str(),
                "AccessDenied"
                    | "AccessDeniedException"
                    | "NoSuchEntity"
                    | "LimitExceeded"
                    | "NotFoundException"
                    | "KMSInvalidStateException"
                    | "DisabledException"
                    | "ResourceNotFoundException"
            ),
            Error::Refused { .. } | Error::Config(_) | Error::Tls { .. } => true,
            _ => false,
        }
    }
}

/// Turn any AWS SDK error into [`Error::Aws`], keeping the service's error
/// code, message and request id. Dispatch failures and timeouts are
/// retryable; so are the throttling and internal-failure codes every AWS
/// service uses.
pub fn aws<E>(service: &'static str, operation: &'static str, err: aws_sdk_sts::error::SdkError<E, aws_sdk_sts::config::http::HttpResponse>) -> Error
where
    E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_sts::error::SdkError;
    // The whole chain (SDK internals included) only at debug level
    // (`RUST_LOG=debug` or `keyturn -v`); messages carry one line.
    tracing::debug!(service, operation, error = %aws_smithy_types::error::display::DisplayErrorContext(&err), "AWS call failed");
    match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let status = se.raw().status().as_u16();
            // An answer without an AWS error code (a proxy, an emulator, a
            // load balancer) is described by its status and the start of its
            // body; AWS error bodies carry no request secrets.
            // An AWS error document in a shape this service's parser does
            // not read (e.g. EC2's `<Errors><Error>` wrapper, which emulators
            // also send) still names its code and message: use them.
            let raw = se.raw().body().bytes().map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned()).unwrap_or_default();
            if e.code().is_none() {
                if let Some(code) = xml_text(&raw, "Code") {
                    let message = xml_text(&raw, "Message").unwrap_or_default();
                    let request_id = xml_text(&raw, "RequestId").or_else(|| xml_text(&raw, "RequestID"));
                    let retryable = is_retryable_aws_code(&code) || status >= 500 || status == 429;
                    return Error::Aws { service, operation, code, message, request_id, retryable };
                }
            }
            let code = e.code().map(str::to_string).unwrap_or_else(|| format!("HTTP{status}"));
            let message = match e.message() {
                // No AWS error code: not an AWS error document (a proxy's page);
                // the SDK may have put the raw body in the message.
                Some(m) if e.code().is_none() => format!("HTTP {status}: {}", body_excerpt(m)),
                Some(m) => m.to_string(),
                None => format!("HTTP {status}: {}", body_excerpt(&raw)),
            };
            let request_id = e.meta().extra("aws_request_id").map(str::to_string);
            let retryable = is_retryable_aws_code(&code) || status >= 500 || status == 429;
            Error::Aws { service, operation, code, message, request_id, retryable }
        }
        SdkError::TimeoutError(_) => {
            Error::Aws { service, operation, code: "Timeout".into(), message: "the request timed out".into(), request_id: None, retryable: true }
        }
        SdkError::DispatchFailure(_) => Error::Aws {
            service,
            operation,
            code: "DispatchFailure".into(),
            message: format!("could not send the request: {}", root_cause(&err)),
            request_id: None,
            retryable: true,
        },
        other => Error::Aws { service, operation, code: "ResponseError".into(), message: root_cause(other), request_id: None, retryable: true },
    }
}

/// The innermost cause of an error, on one line (e.g. `Connection refused
/// (os error 111)`, `operation timed out`): what a person can act on,
/// without the SDK's internal wrapping.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    let text = last.to_string();
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(200).collect()
}

/// The text of the first `<tag>…</tag>` in an XML body, unescaped for the
/// five predefined entities; `None` when absent or empty.
fn xml_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let from = body.find(&open)? + open.len();
    let to = from + body[from..].find(&format!("</{tag}>"))?;
    let t = body[from..to].trim();
    (!t.is_empty()).then(|| t.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&"))
}

/// A body that is not the AWS error document we expected (an HTML 404 page
/// from a proxy, a load balancer's text) as one short line: the page's
/// `<title>` if it has one, else its text without tags, whitespace
/// collapsed, at most 120 characters.
pub fn body_excerpt(body: &str) -> String {
    let lower = body.to_ascii_lowercase();
    let title = lower.find("<title>").and_then(|i| {
        let from = i + "<title>".len();
        lower[from..].find("</title>").map(|j| &body[from..from + j])
    });
    let text = match title {
        Some(t) if !t.trim().is_empty() => t.to_string(),
        _ => {
            let mut out = String::new();
            let mut in_tag = false;
            for c in body.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' if in_tag => {
                        in_tag = false;
                        out.push(' ');
                    }
                    c if !in_tag => out.push(c),
                    _ => {}
                }
            }
            out
        }
    };
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "(empty body)".into();
    }
    if one_line.chars().count() > 120 {
        format!("{}…", one_line.chars().take(120).collect::<String>())
    } else {
        one_line
    }
}

/// Throttling and internal-error codes shared across AWS services.
pub fn is_retryable_aws_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "ServiceFailure"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "InternalFailure"
            | "InternalError"
            | "InternalServerError"
            | "KMSInternalException"
            | "TransactionConflictException"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_classification() {
        let e = |status| Error::Http {
            service: "auth0",
            operation: "PATCH",
            status,
            code: "x".into(),
            message: "m".into(),
            retry_after: None,
            may_have_applied: false,
        };
        assert!(e(429).is_retryable());
        assert!(e(503).is_retryable());
        assert!(!e(403).is_retryable());
        assert!(!e(400).is_retryable());
        assert!(e(403).operator_fixable());
        assert!(!e(503).operator_fixable());
    }

    #[test]
    fn an_error_document_of_another_shape_still_gives_its_code() {
        // EC2's wrapper, as emulators send it for authorization failures.
        let body = r#"<?xml version="1.0" encoding="utf-8"?><ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::1:user/w is not authorized to perform: sts:AssumeRole &amp; more</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"#;
        assert_eq!(xml_text(body, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(xml_text(body, "Message").as_deref(), Some("User: arn:aws:iam::1:user/w is not authorized to perform: sts:AssumeRole & more"));
        assert_eq!(xml_text(body, "RequestId"), None);
        assert_eq!(xml_text("<Code></Code>", "Code"), None);
        assert_eq!(xml_text("<html><title>502</title></html>", "Code"), None);
    }

    #[test]
    fn aws_codes() {
        assert!(is_retryable_aws_code("ServiceFailure"));
        assert!(is_retryable_aws_code("Throttling"));
        assert!(!is_retryable_aws_code("NoSuchEntity"));
        assert!(!is_retryable_aws_code("LimitExceeded"));
    }

    #[test]
    fn redact_removes_an_echoed_secret() {
        let e = Error::Http {
            service: "auth0",
            operation: "PATCH /api/v2/emails/provider",
            status: 400,
            code: "invalid_body".into(),
            message: "Payload validation error: 'Expected type string but found SECRETVALUE123'".into(),
            retry_after: None,
            may_have_applied: false,
        }
        .redact("SECRETVALUE123");
        assert!(!e.to_string().contains("SECRETVALUE123"), "{e}");
        assert!(e.to_string().contains("[REDACTED]"));
        assert_eq!(e.code(), "invalid_body");
    }

    #[test]
    fn unexpected_bodies_become_one_short_line() {
        let html = "<!DOCTYPE html>\n<html>\n<head>\n  <title>404 Not Found</title>\n</head>\n<body>\n<h1>Not Found</h1>\n<p>The requested URL was not found.</p>\n</body></html>";
        assert_eq!(body_excerpt(html), "404 Not Found");
        let no_title = "<html><body>\n<h1>Bad   Gateway</h1>\n<p>upstream\ttimed out</p></body></html>";
        assert_eq!(body_excerpt(no_title), "Bad Gateway upstream timed out");
        let long = "x ".repeat(300);
        let e = body_excerpt(&long);
        assert_eq!(e.chars().count(), 121, "{e}");
        assert!(e.ends_with('…') && !e.contains('\n'));
        assert_eq!(body_excerpt(""), "(empty body)");
        assert_eq!(body_excerpt("  \n "), "(empty body)");
    }

    #[test]
    fn display_includes_request_id() {
        let e = Error::Aws {
            service: "iam",
            operation: "CreateAccessKey",
            code: "LimitExceeded".into(),
            message: "Cannot exceed quota for AccessKeysPerUser: 2".into(),
            request_id: Some("abc".into()),
            retryable: false,
        };
        assert_eq!(e.to_string(), "AWS iam.CreateAccessKey failed: LimitExceeded: Cannot exceed quota for AccessKeysPerUser: 2 (request id abc)");
    }
}
