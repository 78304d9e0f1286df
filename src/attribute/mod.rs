//! Attribute: names the commits behind a drift. For an event it opens the
//! service's repository, resolves the drifting and baseline revisions,
//! takes the commits merged between them (only those touching the service's
//! subdirectory in a monorepo), classifies their AI authorship and ranks
//! them with evidence. A drift with no deploy in range blames nobody.

pub mod classify;
pub(crate) mod notes;
pub(crate) mod owners;
pub(crate) mod paths;
pub(crate) mod pull;
pub(crate) mod rank;
pub(crate) mod remote;
pub mod repo;

use classify::Classifier;
use repo::{RepoError, RepoReader};

use crate::config::GitRepoConfig;
pub(crate) use crate::detect::event::Attribution;
use crate::detect::event::{DriftEvent, Suspect};

/// What to change when a shallow checkout lacks the history attribution needs.
const DEEPEN: &str = "fetch deeper history: git-sync --depth=0 (or a depth that covers your deploys), \
                      or git fetch --deepen=<n> / --unshallow in the checkout";

/// Attribution for every configured repository.
pub struct Attributor {
    repos: Vec<(String, RepoReader)>,
    classifier: Classifier,
}

impl Attributor {
    pub fn new(repos: &[GitRepoConfig], classifier: Classifier) -> Attributor {
        let repos = repos
            .iter()
            .map(|r| {
                let mut reader = RepoReader::new(&r.path, r.subdir.clone());
                reader.web_url = r.web_url.clone();
                reader.paths = paths::PathRules {
                    strip_prefix: r.strip_prefix.clone(),
                    path_prefix: r.path_prefix.clone(),
                };
                (r.service.clone(), reader)
            })
            .collect();
        Attributor { repos, classifier }
    }

    /// The repository for a service: its own entry first (for a service in
    /// a namespace, `namespace/name`, then the bare name), then `"*"`.
    /// When the spans name their repository (`vcs.repository.url.full`),
    /// an entry of the service whose `web_url` or `origin` remote is that
    /// repository goes before the others.
    pub(crate) fn repo_for(&self, service: &str, repository: Option<&str>) -> Option<&RepoReader> {
        let bare = service.rsplit_once('/').map(|(_, name)| name);
        let candidates = || {
            let own = self.repos.iter().filter(move |(s, _)| s == service);
            let by_name = self.repos.iter().filter(move |(s, _)| Some(s.as_str()) == bare);
            let any = self.repos.iter().filter(|(s, _)| s == "*");
            own.chain(by_name).chain(any).map(|(_, r)| r)
        };
        if let Some(key) = repository.and_then(remote::repository_key) {
            let named = candidates().find(|r| {
                let web = r.web_url.as_deref().and_then(remote::repository_key);
                web.as_deref() == Some(key.as_str())
                    || r.origin_url().as_deref().and_then(remote::repository_key).as_deref() == Some(key.as_str())
            });
            if named.is_some() {
                return named;
            }
        }
        candidates().next()
    }

    /// The web address pull-request links of `repo` are built on: its
    /// configured `web_url`, else the address of the repository the spans
    /// name, unless the checkout's `origin` is another repository.
    fn web_url_of(repo: &RepoReader, repository: Option<&str>) -> Option<String> {
        if let Some(web_url) = &repo.web_url {
            return Some(web_url.clone());
        }
        let named = repository?;
        let origin = repo.origin_url();
        let same = origin
            .as_deref()
            .is_none_or(|origin| remote::repository_key(origin) == remote::repository_key(named));
        if same { remote::web_url(named) } else { None }
    }

    /// `revision` of `service` as a full SHA, when its repository knows it.
    /// Blocking: run it off the async threads.
    pub(crate) fn full_revision(&self, service: &str, repository: Option<&str>, revision: &str) -> Option<String> {
        self.repo_for(service, repository)?.resolve(revision).ok().flatten()
    }

    /// Reads git and ranks suspects for `event`. Blocking: run it off the
    /// async threads.
    pub fn attribute(&self, event: &DriftEvent) -> Result<Attribution, RepoError> {
        let Some(repo) = self.repo_for(&event.service, event.repository.as_deref()) else {
            return Ok(Attribution {
                note: Some(format!(
                    "no [[git.repos]] entry for service {:?}: add one to name suspects",
                    event.service
                )),
                ..Default::default()
            });
        };
        // Each revision resolves on its own: an unknown drifting revision
        // still reports its baseline as a full SHA, and the reverse.
        let revision = repo.resolve(&event.revision)?;
        let baseline = match event.baseline_revision.as_deref() {
            Some(name) => Some((name, repo.resolve(name)?)),
            None => None,
        };
        let resolved_baseline = baseline.as_ref().and_then(|(_, full)| full.clone());
        let Some(revision) = revision else {
            return Ok(Attribution {
                baseline_revision: resolved_baseline,
                note: Some(format!(
                    "revision {:?} is not in {} (is the checkout up to date?); no suspects",
                    event.revision,
                    repo.path.display()
                )),
                unresolved: Some(event.revision.clone()),
                ..Default::default()
            });
        };
        let Some((baseline_name, baseline)) = baseline else {
            return Ok(Attribution {
                revision: Some(revision),
                note: Some("no deploy in range: the drift happened within one revision, so no commit is blamed".into()),
                ..Default::default()
            });
        };
        let Some(baseline) = baseline else {
            let shallow = repo.is_shallow();
            let note = if shallow {
                format!(
                    "baseline revision {baseline_name:?} is not in {}, a shallow clone whose history ends before it, \
                     so the commits of the deploy cannot be read and nobody is blamed; {DEEPEN}",
                    repo.path.display()
                )
            } else {
                format!("baseline revision {baseline_name:?} is not in {}; no suspects", repo.path.display())
            };
            return Ok(Attribution {
                revision: Some(revision),
                note: Some(note),
                unresolved: Some(baseline_name.to_owned()),
                shallow,
                ..Default::default()
            });
        };
        if baseline == revision {
            return Ok(Attribution {
                revision: Some(revision),
                baseline_revision: Some(baseline),
                note: Some("baseline and current revision are the same commit: no deploy in range".into()),
                ..Default::default()
            });
        }
        let range = repo.commits(Some(&baseline), &revision, &self.classifier)?;
        let (file, file_note) = locate_file(repo, event, &revision);
        let mut suspects = rank::rank(event, &range.commits, file.as_ref());
        let web_url = Self::web_url_of(repo, event.repository.as_deref());
        for suspect in &mut suspects {
            if let Some(commit) = range.commits.iter().find(|c| c.id == suspect.commit) {
                let web_url = web_url.as_deref();
                suspect.pull_request = pull::pull_request(&commit.message, web_url)
                    .or_else(|| commit.merged_by.as_deref().and_then(|merge| pull::pull_request(merge, web_url)));
            }
        }
        let subdir = repo.subdir.as_deref().map(|d| format!(" touching {d}/")).unwrap_or_default();
        let mut note = if range.commits.is_empty() {
            format!("no commits{subdir} between {} and {}", short(&baseline), short(&revision))
        } else {
            format!(
                "{} commit(s){subdir} between {} and {}{}",
                range.commits.len(),
                short(&baseline),
                short(&revision),
                if range.truncated { " (only the newest were read)" } else { "" }
            )
        };
        if let Some(file_note) = file_note {
            note.push_str("; ");
            note.push_str(&file_note);
        }
        if range.past_shallow_edge {
            note.push_str(&format!(
                "; the checkout is a shallow clone whose history ends inside the range, so the oldest commits of the \
                 deploy are missing or cannot be diffed, and cannot be suspects; {DEEPEN}"
            ));
        }
        let owners = owners_of(repo, &revision, &suspects, &range.commits, file.as_ref());
        Ok(Attribution {
            revision: Some(revision),
            baseline_revision: Some(baseline),
            suspects,
            note: Some(note),
            unresolved: None,
            shallow: range.past_shallow_edge,
            owners,
        })
    }
}

/// Suspects among the top ones whose files decide the owners.
const OWNING_SUSPECTS: usize = 3;

/// The owners, per CODEOWNERS at `revision`, of the files that the linked
/// suspects among the top three changed, and of the drifting spans' file.
/// Unlinked suspects name no owner: their files may be anyone's.
fn owners_of(
    repo: &RepoReader,
    revision: &str,
    suspects: &[Suspect],
    commits: &[repo::CommitRecord],
    file: Option<&rank::FileClue>,
) -> Vec<String> {
    let text = match repo.first_file_at(revision, owners::LOCATIONS) {
        Ok(Some(text)) => text,
        Ok(None) => return Vec::new(),
        Err(error) => {
            tracing::warn!(%error, "cannot read CODEOWNERS; the event names no owners");
            return Vec::new();
        }
    };
    let codeowners = owners::CodeOwners::parse(&text);
    let mut paths: Vec<&str> = suspects
        .iter()
        .take(OWNING_SUSPECTS)
        .filter(|s| s.linked)
        .filter_map(|s| commits.iter().find(|c| c.id == s.commit))
        .flat_map(|c| c.files.iter().map(|f| f.path.as_str()))
        .collect();
    if let Some(rank::FileClue::Repo(path)) = file {
        paths.push(path);
    }
    owners::owners_of_paths(&codeowners, paths)
}

/// Where the drifting spans' `code.file.path` is in the repository at
/// `revision`, and what to say when it cannot be told.
fn locate_file(repo: &RepoReader, event: &DriftEvent, revision: &str) -> (Option<rank::FileClue>, Option<String>) {
    let Some(span_path) = event.code.filepath.as_deref().filter(|p| !p.is_empty()) else {
        return (None, None);
    };
    let files = match repo.files_at(revision) {
        Ok(files) => files,
        Err(error) => {
            tracing::warn!(%error, "cannot list the revision's files; matching code.file.path by suffix alone");
            return (Some(rank::FileClue::Span(span_path.to_owned())), None);
        }
    };
    let within = repo.subdir.as_deref().map(|d| format!(" below {d}/")).unwrap_or_default();
    match paths::map_path(span_path, &files, repo.subdir.as_deref(), &repo.paths) {
        paths::PathMatch::Found(path) => (Some(rank::FileClue::Repo(path)), None),
        paths::PathMatch::Ambiguous(candidates) => (
            None,
            Some(format!(
                "code.file.path {span_path:?} could be any of {}{within}; set strip_prefix or path_prefix in the \
                 service's [[git.repos]] entry to say which",
                candidates.join(", ")
            )),
        ),
        paths::PathMatch::Missing => (
            None,
            Some(format!(
                "code.file.path {span_path:?} names no file of {}{within}; if the service is built from another \
                 directory, set strip_prefix or path_prefix in its [[git.repos]] entry",
                short(revision)
            )),
        ),
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespaced_service_finds_its_own_entry_then_its_bare_name_then_the_wildcard() {
        let repo = |service: &str, path: &str| GitRepoConfig {
            service: service.into(),
            path: path.into(),
            ..Default::default()
        };
        let attributor = Attributor::new(
            &[repo("billing/checkout", "/b"), repo("checkout", "/c"), repo("*", "/any")],
            Classifier::default(),
        );
        let path = |service: &str| attributor.repo_for(service, None).map(|r| r.path().display().to_string());
        assert_eq!(path("billing/checkout").as_deref(), Some("/b"));
        assert_eq!(path("shop/checkout").as_deref(), Some("/c"));
        assert_eq!(path("checkout").as_deref(), Some("/c"));
        assert_eq!(path("shop/cart").as_deref(), Some("/any"));
    }

    #[test]
    fn the_repository_the_spans_name_chooses_among_a_services_entries() {
        let repo = |service: &str, path: &str, web_url: Option<&str>| GitRepoConfig {
            service: service.into(),
            path: path.into(),
            web_url: web_url.map(str::to_owned),
            ..Default::default()
        };
        let attributor = Attributor::new(
            &[
                repo("*", "/shop", Some("https://github.com/acme/shop")),
                repo("*", "/payments", Some("https://github.com/acme/payments")),
                repo("checkout", "/checkout", None),
            ],
            Classifier::default(),
        );
        let path = |service: &str, named: Option<&str>| {
            attributor.repo_for(service, named).map(|r| r.path().display().to_string())
        };
        assert_eq!(path("cart", None).as_deref(), Some("/shop"), "the first entry without a name");
        assert_eq!(path("cart", Some("git@github.com:acme/payments.git")).as_deref(), Some("/payments"));
        assert_eq!(
            path("cart", Some("https://github.com/acme/unknown")).as_deref(),
            Some("/shop"),
            "an unknown repository falls back to the usual choice"
        );
        assert_eq!(
            path("checkout", Some("https://github.com/acme/payments")).as_deref(),
            Some("/payments"),
            "a named repository wins over the service's own entry that is not it"
        );
        // Without a configured web_url, the named repository gives one.
        let checkout = attributor.repo_for("checkout", None).expect("entry");
        assert_eq!(
            Attributor::web_url_of(checkout, Some("git@github.com:acme/checkout.git")).as_deref(),
            Some("https://github.com/acme/checkout")
        );
        let shop = attributor.repo_for("cart", None).expect("entry");
        assert_eq!(
            Attributor::web_url_of(shop, Some("https://github.com/acme/other")).as_deref(),
            Some("https://github.com/acme/shop"),
            "a configured web_url stays"
        );
    }
}
