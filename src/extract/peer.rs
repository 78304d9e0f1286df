//! Peer identity of CLIENT and PRODUCER spans: the one name under which a
//! service's outbound calls to the same destination are counted, whichever
//! semantic-convention generation the instrumentation speaks.
//!
//! Order (the public contract): `peer.service`; databases as
//! `db.system://host/namespace`; messaging as `messaging.system:destination`;
//! `server.address[:server.port]` (legacy `net.peer.name`/`net.peer.port`);
//! the host and port of `url.full`/`http.url`. URL paths and queries, where
//! ids live, never reach the identity.

use std::fmt::Write;

use super::attrs::Attrs;

const DB_SYSTEM: &[&str] = &["db.system.name", "db.system"];
const DB_NAMESPACE: &[&str] = &["db.namespace", "db.name"];
const MESSAGING_SYSTEM: &[&str] = &["messaging.system"];
const MESSAGING_DESTINATION: &[&str] = &[
    "messaging.destination.name",
    "messaging.destination",
    "messaging.destination.template",
];
const HOST: &[&str] = &["server.address", "net.peer.name", "http.host"];
const PORT: &[&str] = &["server.port", "net.peer.port"];
const SOCKET_HOST: &[&str] = &["network.peer.address", "net.sock.peer.addr", "net.peer.ip"];
const SOCKET_PORT: &[&str] = &["network.peer.port", "net.sock.peer.port"];
const URL: &[&str] = &["url.full", "http.url"];

/// Writes the peer identity of a client/producer span into `out` (cleared
/// first) and returns whether one was found.
pub(crate) fn peer_identity(attrs: Attrs<'_>, out: &mut String) -> bool {
    out.clear();
    if let Some(service) = attrs.str(&["peer.service"]) {
        out.push_str(service.trim());
        return true;
    }
    let url = attrs.str(URL).and_then(parse_url);
    let host = attrs
        .str(HOST)
        .map(normalize_host)
        .or_else(|| url.as_ref().map(|u| u.host.clone()))
        .or_else(|| attrs.str(SOCKET_HOST).map(normalize_host));
    let port = attrs
        .int(PORT)
        .or_else(|| url.as_ref().and_then(|u| u.port).map(i64::from))
        .or_else(|| attrs.str(HOST).is_none().then(|| attrs.int(SOCKET_PORT)).flatten())
        .filter(|p| (1..=65535).contains(p));

    if let Some(system) = attrs.str(DB_SYSTEM) {
        let _ = write!(
            out,
            "{}://{}",
            system.trim().to_ascii_lowercase(),
            host.as_deref().unwrap_or("")
        );
        if let Some(namespace) = attrs.str(DB_NAMESPACE) {
            let _ = write!(out, "/{}", namespace.trim());
        }
        return true;
    }
    if let Some(system) = attrs.str(MESSAGING_SYSTEM) {
        let destination = attrs.str(MESSAGING_DESTINATION).map(str::trim);
        let _ = write!(
            out,
            "{}:{}",
            system.trim().to_ascii_lowercase(),
            destination.or(host.as_deref()).unwrap_or("unknown")
        );
        return true;
    }
    match host {
        Some(host) if !host.is_empty() => {
            out.push_str(&bracket_ipv6(&host));
            if let Some(port) = port {
                let _ = write!(out, ":{port}");
            }
            true
        }
        _ => false,
    }
}

struct UrlAuthority {
    host: String,
    port: Option<u16>,
}

/// Host and port of an absolute URL; the scheme's default port when none is
/// written, so `https://h/x` and `server.address=h, server.port=443` agree.
fn parse_url(url: &str) -> Option<UrlAuthority> {
    let uri: http::Uri = url.trim().parse().ok()?;
    let host = normalize_host(uri.host()?);
    if host.is_empty() {
        return None;
    }
    let port = uri.port_u16().or(match uri.scheme_str()?.to_ascii_lowercase().as_str() {
        "https" | "wss" => Some(443),
        "http" | "ws" => Some(80),
        _ => None,
    });
    Some(UrlAuthority { host, port })
}

/// Lower-cases a host name and strips brackets and a trailing root dot, so
/// the same destination gets the same identity however it was written.
fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

fn bracket_ipv6(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

/// AWS's IPv6 instance-metadata address.
const AWS_V6_METADATA: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Whether a peer is a link-local or cloud instance-metadata address, which
/// an application has no business calling: a classic SSRF target.
pub(crate) fn is_metadata_endpoint(peer: &str) -> bool {
    let host = peer_host(peer);
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return match ip {
            std::net::IpAddr::V4(v4) => v4.is_link_local(),
            // fe80::/10 and AWS's IPv6 metadata address fd00:ec2::254.
            std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == AWS_V6_METADATA,
        };
    }
    matches!(
        host,
        "metadata.google.internal" | "metadata" | "instance-data" | "metadata.azure.internal"
    )
}

/// The host part of a peer identity (`host:port`, `[v6]:port`, a bare name).
pub(crate) fn peer_host(peer: &str) -> &str {
    let rest = peer.split_once("://").map_or(peer, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) && !host.contains(':') => host,
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::attrs::test_support::kv;
    use crate::receive::view::KeyValueView as KeyValue;

    fn identity(attrs: &[KeyValue<'_>]) -> Option<String> {
        let mut out = String::new();
        peer_identity(Attrs(attrs), &mut out).then_some(out)
    }

    /// Attribute sets as real instrumentations emit them.
    #[test]
    fn table_of_real_attribute_sets() {
        let cases: Vec<(&str, Vec<KeyValue<'static>>, Option<&str>)> = vec![
            (
                "python requests, legacy HTTP semconv",
                vec![
                    kv("http.method", "POST"),
                    kv("http.url", "https://api.fraudscore.io/v1/score/8812?x=1"),
                    kv("http.status_code", 200),
                ],
                Some("api.fraudscore.io:443"),
            ),
            (
                "python requests, stable HTTP semconv",
                vec![
                    kv("http.request.method", "POST"),
                    kv("url.full", "https://api.fraudscore.io/v1/score"),
                    kv("server.address", "api.fraudscore.io"),
                    kv("server.port", 443),
                ],
                Some("api.fraudscore.io:443"),
            ),
            (
                "server.address without port takes the URL's port",
                vec![
                    kv("server.address", "Payments.Internal."),
                    kv("url.full", "http://payments.internal:8080/charge/77"),
                ],
                Some("payments.internal:8080"),
            ),
            (
                "java okhttp legacy net.peer",
                vec![
                    kv("net.peer.name", "inventory"),
                    kv("net.peer.port", 9000),
                    kv("http.url", "http://inventory:9000/items/1"),
                ],
                Some("inventory:9000"),
            ),
            (
                "peer.service wins",
                vec![kv("peer.service", "ledger"), kv("server.address", "10.0.0.7")],
                Some("ledger"),
            ),
            (
                "grpc client, stable",
                vec![
                    kv("rpc.system", "grpc"),
                    kv("rpc.service", "shop.Payments"),
                    kv("server.address", "payments"),
                    kv("server.port", 50051),
                ],
                Some("payments:50051"),
            ),
            (
                "grpc client, legacy with socket address only",
                vec![
                    kv("rpc.system", "grpc"),
                    kv("net.sock.peer.addr", "10.1.2.3"),
                    kv("net.sock.peer.port", 50051),
                ],
                Some("10.1.2.3:50051"),
            ),
            (
                "postgres, stable",
                vec![
                    kv("db.system.name", "postgresql"),
                    kv("db.namespace", "orders"),
                    kv("server.address", "pg.internal"),
                    kv("server.port", 5432),
                ],
                Some("postgresql://pg.internal/orders"),
            ),
            (
                "postgres, legacy",
                vec![
                    kv("db.system", "postgresql"),
                    kv("db.name", "orders"),
                    kv("net.peer.name", "pg.internal"),
                    kv("db.statement", "SELECT 1"),
                ],
                Some("postgresql://pg.internal/orders"),
            ),
            (
                "redis without namespace",
                vec![kv("db.system", "redis"), kv("net.peer.name", "cache")],
                Some("redis://cache"),
            ),
            (
                "kafka producer, stable",
                vec![
                    kv("messaging.system", "kafka"),
                    kv("messaging.destination.name", "orders.created"),
                    kv("server.address", "kafka-0"),
                ],
                Some("kafka:orders.created"),
            ),
            (
                "rabbitmq, legacy destination",
                vec![kv("messaging.system", "rabbitmq"), kv("messaging.destination", "emails")],
                Some("rabbitmq:emails"),
            ),
            (
                "metadata endpoint by IP",
                vec![kv("http.url", "http://169.254.169.254/latest/meta-data/iam")],
                Some("169.254.169.254:80"),
            ),
            (
                "IPv6 literal",
                vec![kv("url.full", "https://[2001:db8::1]:8443/x")],
                Some("[2001:db8::1]:8443"),
            ),
            (
                "userinfo is stripped",
                vec![kv("url.full", "https://user:pw@api.example.com/x")],
                Some("api.example.com:443"),
            ),
            (
                "port as string",
                vec![kv("server.address", "api.example.com"), kv("server.port", "8443")],
                Some("api.example.com:8443"),
            ),
            ("no destination at all", vec![kv("http.method", "GET")], None),
            ("garbage URL", vec![kv("url.full", "not a url")], None),
        ];
        for (name, attrs, want) in cases {
            assert_eq!(identity(&attrs).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn metadata_endpoints_are_recognised() {
        for peer in [
            "169.254.169.254:80",
            "169.254.170.2:80",
            "metadata.google.internal:80",
            "[fe80::1]:80",
            "[fd00:ec2::254]:80",
        ] {
            assert!(is_metadata_endpoint(peer), "{peer}");
        }
        for peer in [
            "api.fraudscore.io:443",
            "10.0.0.1:80",
            "postgresql://pg/orders",
            "[2001:db8::1]:443",
            "kafka:orders",
        ] {
            assert!(!is_metadata_endpoint(peer), "{peer}");
        }
    }

    #[test]
    fn peer_host_parts() {
        assert_eq!(peer_host("api.x.io:443"), "api.x.io");
        assert_eq!(peer_host("[::1]:443"), "::1");
        assert_eq!(peer_host("postgresql://pg.internal/orders"), "pg.internal");
        assert_eq!(peer_host("ledger"), "ledger");
    }
}
