//! Repository URLs as people, CI systems and SDKs write them: the one a
//! service's spans name (`vcs.repository.url.full`) chooses among the
//! configured repositories, and gives the web address pull-request links
//! are built on when the configuration names none.
//!
//! `https://github.com/Shop/Checkout.git`, `git@github.com:shop/checkout`
//! and `ssh://git@github.com:22/shop/checkout/` are one repository.

/// A repository URL reduced to host and path, for comparison: scheme,
/// user, port, a trailing `.git` and slashes dropped, lower-cased.
pub(crate) fn repository_key(url: &str) -> Option<String> {
    split(url).map(|parts| format!("{}/{}", parts.host, parts.path).to_ascii_lowercase())
}

/// The address people open for a repository URL: `https://host/path` (the
/// URL's own scheme and port when it is an HTTP one), without `.git`.
pub(crate) fn web_url(url: &str) -> Option<String> {
    let parts = split(url)?;
    let web = match (parts.scheme, parts.port) {
        ("http" | "https", Some(port)) => format!("{}://{}:{port}/{}", parts.scheme, parts.host, parts.path),
        ("http", None) => format!("http://{}/{}", parts.host, parts.path),
        _ => format!("https://{}/{}", parts.host, parts.path),
    };
    reqwest::Url::parse(&web).ok().filter(|u| u.host().is_some()).map(|_| web)
}

struct Parts<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
}

/// The parts of a URL or of an scp-like address (`git@host:path`).
fn split(url: &str) -> Option<Parts<'_>> {
    let url = url.trim();
    let (scheme, authority, path) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/')?;
            (scheme, authority, path)
        }
        // scp-like: `user@host:path`, the colon before any slash.
        None => {
            let colon = url.find(':')?;
            if url[..colon].contains('/') {
                return None;
            }
            ("ssh", &url[..colon], &url[colon + 1..])
        }
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let (host, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => (name, Some(port)),
        _ => (host, None),
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
    let valid = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == '?' || c == '#');
    (valid(host) && valid(path)).then_some(Parts { scheme, host, port, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_repository_however_it_is_written() {
        let key = Some("github.com/shop/checkout".to_owned());
        for url in [
            "https://github.com/Shop/Checkout.git",
            "https://github.com/shop/checkout/",
            "git@github.com:shop/checkout.git",
            "ssh://git@github.com:22/shop/checkout",
            "https://token@github.com/shop/checkout",
        ] {
            assert_eq!(repository_key(url), key, "{url}");
        }
        assert_ne!(repository_key("https://github.com/shop/checkout-api"), key);
        assert_eq!(repository_key("not a url"), None);
        assert_eq!(repository_key("https://github.com"), None, "no path");
    }

    #[test]
    fn the_web_address_of_a_repository() {
        assert_eq!(
            web_url("git@gitlab.example.com:group/sub/proj.git").as_deref(),
            Some("https://gitlab.example.com/group/sub/proj")
        );
        assert_eq!(
            web_url("https://github.com/Shop/Checkout.git").as_deref(),
            Some("https://github.com/Shop/Checkout"),
            "case is kept for people"
        );
        assert_eq!(
            web_url("http://gitea.internal:3000/shop/checkout").as_deref(),
            Some("http://gitea.internal:3000/shop/checkout")
        );
        assert_eq!(web_url("ssh://git@github.com:22/shop/checkout").as_deref(), Some("https://github.com/shop/checkout"));
        assert_eq!(web_url("file:///repos/shop"), None);
    }
}
