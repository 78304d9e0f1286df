//! Mapping the file a span names to the file in the repository.
//!
//! A span's `code.file.path` is the path the running process saw: inside a
//! container image (`/app/src/orders.js`, `/usr/src/app/…`, `/workspace/…`),
//! an installed package (`…/site-packages/shop/pay.py`) or a Go module path
//! (`github.com/acme/shop/services/orders/handler.go`). The repository has
//! the same file under another root, often below the service's `subdir` in
//! a monorepo. The two are matched by the longest run of trailing path
//! components they share, among the files of the drifting revision; a tie
//! is reported as ambiguous rather than guessed, and a per-repository
//! `strip_prefix` / `path_prefix` settles it.

/// How a repository's files relate to the paths its spans carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathRules {
    /// Removed from the start of a span's path (`/app/`).
    pub strip_prefix: Option<String>,
    /// Put before what is left (`services/orders/`).
    pub path_prefix: Option<String>,
}

/// What a span's path maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathMatch {
    /// One repository file, from the repository root.
    Found(String),
    /// Several files share the longest suffix: these, at most five.
    Ambiguous(Vec<String>),
    /// No file of the revision shares enough of the path.
    Missing,
}

/// Files listed in an ambiguous match.
const MAX_AMBIGUOUS: usize = 5;

/// The repository file among `files` (paths from the repository root,
/// those below `subdir` when the service has one) that `span_path` names.
pub(crate) fn map_path(span_path: &str, files: &[String], subdir: Option<&str>, rules: &PathRules) -> PathMatch {
    let normal = normalize(span_path);
    if normal.is_empty() {
        return PathMatch::Missing;
    }
    if rules.strip_prefix.is_some() || rules.path_prefix.is_some() {
        let strip = rules.strip_prefix.as_deref().map(normalize).unwrap_or_default();
        // Whole components only: `/app` strips `/app/x`, not `/application/x`.
        let rest = match normal.strip_prefix(strip.as_str()) {
            Some("") if !strip.is_empty() => "",
            Some(rest) if !strip.is_empty() && rest.starts_with('/') => &rest[1..],
            _ => normal.as_str(),
        };
        let prefix = rules.path_prefix.as_deref().map(normalize).unwrap_or_default();
        let mapped = if prefix.is_empty() { rest.to_owned() } else { format!("{prefix}/{rest}") };
        if files.contains(&mapped) {
            return PathMatch::Found(mapped);
        }
    }
    let span: Vec<&str> = normal.split('/').collect();
    let subdir = subdir.map(normalize).filter(|s| !s.is_empty());
    let mut best = 0;
    let mut found: Vec<&String> = Vec::new();
    for file in files {
        // Within the service's directory, the part a build copies.
        let relative = match &subdir {
            Some(dir) => match file.strip_prefix(dir.as_str()).and_then(|r| r.strip_prefix('/')) {
                Some(rest) => rest,
                None => continue,
            },
            None => file.as_str(),
        };
        let own: Vec<&str> = relative.split('/').collect();
        let shared = span.iter().rev().zip(own.iter().rev()).take_while(|(a, b)| a == b).count();
        // The whole of the file's path, or at least a directory and the
        // file name: a bare `main.py` in some library is not the service's.
        if shared == 0 || (shared < own.len() && shared < 2) {
            continue;
        }
        if shared > best {
            best = shared;
            found.clear();
        }
        if shared == best {
            found.push(file);
        }
    }
    match found.as_slice() {
        [] => PathMatch::Missing,
        [one] => PathMatch::Found((*one).clone()),
        many => PathMatch::Ambiguous(many.iter().take(MAX_AMBIGUOUS).map(|f| (*f).clone()).collect()),
    }
}

/// `\` to `/`, no `./` or empty components, no leading or trailing `/`.
fn normalize(path: &str) -> String {
    path.replace('\\', "/")
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[&str]) -> Vec<String> {
        list.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn container_roots_map_into_the_services_directory() {
        let repo = files(&[
            "services/orders/src/orders.js",
            "services/orders/package.json",
            "services/billing/src/orders.js",
            "README.md",
        ]);
        let none = PathRules::default();
        for span in ["/app/src/orders.js", "/usr/src/app/src/orders.js", "/workspace/src/orders.js", "src/orders.js"] {
            assert_eq!(
                map_path(span, &repo, Some("services/orders"), &none),
                PathMatch::Found("services/orders/src/orders.js".into()),
                "{span}"
            );
        }
        // Without the subdir both services' copies match equally.
        assert!(matches!(map_path("/app/src/orders.js", &repo, None, &none), PathMatch::Ambiguous(f) if f.len() == 2));
    }

    #[test]
    fn packages_and_module_paths_match_by_their_longest_suffix() {
        let repo = files(&["src/shop/pay.py", "src/shop/api.py", "tests/test_pay.py", "services/orders/handler.go", "go.mod"]);
        let none = PathRules::default();
        assert_eq!(
            map_path("/usr/local/lib/python3.12/site-packages/shop/pay.py", &repo, None, &none),
            PathMatch::Found("src/shop/pay.py".into())
        );
        assert_eq!(
            map_path("github.com/acme/shop/services/orders/handler.go", &repo, None, &none),
            PathMatch::Found("services/orders/handler.go".into())
        );
        // A library's file of the same name is not the service's.
        assert_eq!(
            map_path("/usr/lib/python3/site-packages/requests/api.py", &repo, None, &none),
            PathMatch::Missing
        );
        assert_eq!(map_path("C:\\build\\shop\\pay.py", &repo, None, &none), PathMatch::Found("src/shop/pay.py".into()));
        assert_eq!(map_path("", &repo, None, &none), PathMatch::Missing);
    }

    #[test]
    fn prefixes_settle_what_suffixes_cannot() {
        let repo = files(&["a/api/handler.go", "b/api/handler.go"]);
        assert!(matches!(map_path("/srv/api/handler.go", &repo, None, &PathRules::default()), PathMatch::Ambiguous(_)));
        let rules = PathRules {
            strip_prefix: Some("/srv/".into()),
            path_prefix: Some("b".into()),
        };
        assert_eq!(map_path("/srv/api/handler.go", &repo, None, &rules), PathMatch::Found("b/api/handler.go".into()));
        // A prefix strips whole components only.
        let app = files(&["services/orders/lication/x.go", "application/x.go"]);
        let strip_app = PathRules {
            strip_prefix: Some("/app".into()),
            path_prefix: Some("services/orders".into()),
        };
        assert_eq!(map_path("/application/x.go", &app, None, &strip_app), PathMatch::Found("application/x.go".into()));
        // A rule that maps to no file falls back to the suffix match.
        let elsewhere = PathRules {
            strip_prefix: None,
            path_prefix: Some("c".into()),
        };
        assert!(matches!(map_path("/srv/api/handler.go", &repo, None, &elsewhere), PathMatch::Ambiguous(_)));
    }
}
