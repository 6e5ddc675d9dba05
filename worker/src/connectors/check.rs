//! Checks of configured and received values that become parts of URLs,
//! host names, IAM calls or log lines. Connectors check their own
//! configuration with them; the configuration root and intake use them too
//! (they sit above `connectors`, see `layers.rs`).

/// An optional AWS account id: 12 ASCII digits when given.
pub fn check_account(account_id: Option<&str>) -> Result<(), String> {
    match account_id {
        Some(a) if a.len() != 12 || !a.chars().all(|c| c.is_ascii_digit()) => Err("must be a 12-digit AWS account id".into()),
        _ => Ok(()),
    }
}

/// An AWS region name, in AWS's shape: `us-east-1`, `eu-central-2`,
/// `us-gov-west-1`, `ap-southeast-4` (`^[a-z]{2}(-[a-z]+)+-[0-9]+$`). It
/// becomes part of host names (`email-smtp.<region>.amazonaws.com`), so
/// nothing else is let through.
pub fn check_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let letters = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase());
    let ok = parts.len() >= 3
        && parts[0].len() == 2
        && letters(parts[0])
        && parts[1..parts.len() - 1].iter().all(|p| letters(p))
        && parts.last().is_some_and(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err("must be an AWS region like us-east-1".into())
    }
}

/// A bare DNS host name, e.g. an Auth0 tenant domain `example.eu.auth0.com`:
/// labels of letters, digits and `-` (1-63 each, not starting or ending
/// with `-`), at least two of them, at most 253 characters. No scheme, user
/// info (`@`), port (`:`), path (`/`), query (`?`) or fragment (`#`), and no
/// IP address (a name is what a certificate is checked against).
pub fn check_host(host: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "must be a bare DNS host name like example.eu.auth0.com (no scheme, '@', ':port', '/', '?', '#' or IP address); got {:?}",
            host.chars().take(80).collect::<String>()
        ))
    };
    if host.is_empty() || host.len() > 253 {
        return bad();
    }
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok =
        |l: &str| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if labels.len() < 2 || !labels.iter().all(|l| label_ok(l)) {
        return bad();
    }
    // 169.254.169.254, 10.0.0.1, 0x7f.1: a numeric last label is an address, not a name.
    if labels.last().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()) || l.to_ascii_lowercase().starts_with("0x")) {
        return bad();
    }
    // The URL parser must read it back as this very host.
    match reqwest::Url::parse(&format!("https://{host}/")) {
        Ok(u) if u.host_str() == Some(host.to_ascii_lowercase().as_str()) && u.port().is_none() && u.username().is_empty() => Ok(()),
        _ => bad(),
    }
}

/// An id that becomes one path segment of an API URL (Graph tenant,
/// application, service principal and job ids): 1-128 letters, digits,
/// `.`, `_` and `-`, not only dots.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !id.chars().all(|c| c == '.');
    if ok {
        Ok(())
    } else {
        Err("must be an id: 1-128 letters, digits, '.', '_' and '-'".into())
    }
}

/// A target base URL: https (or http to a loopback address, for local
/// fakes), a host that is not link-local or a cloud metadata address
/// (169.254.0.0/16, fe80::/10, fd00:ec2::254, `metadata.google.internal`,
/// an unspecified address), and no user info, query or fragment.
pub fn check_base_url(u: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(u).map_err(|e| format!("not a URL: {e}"))?;
    let loopback = super::http::is_loopback(&url);
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err("must be https (or http on a loopback address)".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry user info ('user@' or 'user:password@')".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query ('?') or fragment ('#')".into());
    }
    let host = url.host_str().unwrap_or("");
    let metadata = match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_link_local() || ip.is_unspecified(),
        Ok(std::net::IpAddr::V6(ip)) => {
            (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip.is_unspecified()
                || ip == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local() || v4.is_unspecified())
        }
        Err(_) => host.eq_ignore_ascii_case("metadata.google.internal") || host.eq_ignore_ascii_case("metadata"),
    };
    if host.is_empty() || metadata {
        return Err(format!("must not point at a link-local or cloud metadata address ({host})"));
    }
    Ok(())
}

/// 12 ASCII digits.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// IAM's rule for user names (`CreateUser`'s `UserName`: pattern
/// `[\w+=,.@-]+`, 1 to 64 characters; `\w` is ASCII letters, digits and `_`).
pub fn valid_iam_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// Text from a message, made safe for one log line or a subject: control
/// characters (CR, LF, tab, escapes, …) become `?`, and it is cut to `max`
/// characters.
pub fn one_line(s: &str, max: usize) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).take(max).collect()
}

/// The longest credential a person may hand over, unless its source says
/// otherwise.
pub const MAX_HANDED_BYTES: usize = 16 * 1024;

/// Why a value a person handed over was not taken as a credential. Never
/// names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandedProblem {
    #[error("it is empty")]
    Empty,
    /// Longer than any credential of its kind (`noun`, e.g. `SCIM token`).
    #[error("it is {len} bytes long, more than any {noun}")]
    TooLong { len: usize, noun: &'static str },
    #[error("it contains spaces, line breaks or control characters")]
    NotOneWord,
}

/// The credential in `raw` if it is one word of printable text of at most
/// `max` bytes (surrounding whitespace, a pasted line break, is not part of
/// it); `noun` names the credential in the reason.
pub fn one_word<'a>(raw: &'a str, max: usize, noun: &'static str) -> Result<&'a str, HandedProblem> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(HandedProblem::Empty);
    }
    if t.len() > max {
        return Err(HandedProblem::TooLong { len: t.len(), noun });
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(HandedProblem::NotOneWord);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_regions_and_base_urls() {
        for ok in ["example.eu.auth0.com", "tenant.auth0.com", "login.example-corp.io", "EXAMPLE.us.auth0.com"] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "localhost",
            "a..b",
            "-a.b",
            "a-.b",
            "1.2.3.4",
            "169.254.169.254",
            "0x7f.1",
            "[::1]",
            "a.b:1",
            "a@b.c",
            "a b.c",
            "a.b/",
            "a.b?",
            "a.b#",
            "é.example",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
        assert!(check_host(&format!("{}.com", "a".repeat(64))).is_err(), "a label is at most 63");
        for ok in ["us-east-1", "eu-central-2", "us-gov-west-1", "ap-southeast-4", "cn-north-1"] {
            assert!(check_region(ok).is_ok(), "{ok}");
        }
        for bad in ["", "us-east", "useast-1", "US-EAST-1", "x/../evil", "us-east-1/", "us--1", "us-east-1a", "u-east-1", "us-east-1-"] {
            assert!(check_region(bad).is_err(), "{bad}");
        }
        for bad in [
            "http://example.com",
            "https://169.254.169.254/",
            "https://[fe80::1]/",
            "https://0.0.0.0/",
            "https://[::ffff:169.254.169.254]/",
            "https://metadata.google.internal/",
            "https://a.b/#x",
            "ftp://a.b",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
        assert!(check_id("AWSSingleSignOn.abc-1_2").is_ok());
        for bad in ["", ".", "..", "a/b", "a?b", "a b", "a#b", "a%2Fb"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
