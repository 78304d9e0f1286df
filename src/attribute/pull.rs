//! Pull and merge requests named in commit messages, so a suspect links to
//! the review people discussed rather than to a bare SHA.
//!
//! Recognised: GitHub's squash subject `Subject (#412)` and merge subject
//! `Merge pull request #412 from …`, and GitLab's `See merge request
//! group/project!412` trailer line. The link is built from the repository's
//! web address (`[[git.repos]] web_url`).

use crate::detect::event::PullRequest;

/// Which forge's numbering a message used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forge {
    GitHub,
    GitLab,
}

/// The pull or merge request `message` names, linked under `web_url`.
pub(crate) fn pull_request(message: &str, web_url: Option<&str>) -> Option<PullRequest> {
    let (number, forge) = number(message)?;
    let url = web_url.map(|base| {
        let base = base.trim_end_matches('/').trim_end_matches(".git");
        match forge {
            Forge::GitHub if !base.contains("gitlab") => format!("{base}/pull/{number}"),
            _ => format!("{base}/-/merge_requests/{number}"),
        }
    });
    Some(PullRequest { number, url })
}

fn number(message: &str) -> Option<(u64, Forge)> {
    let subject = message.lines().next().unwrap_or("").trim();
    if let Some(rest) = subject.strip_prefix("Merge pull request #") {
        return digits(rest).map(|n| (n, Forge::GitHub));
    }
    // A squash merge: "Subject (#412)", the number last.
    if let Some(inner) = subject.strip_suffix(')')
        && let Some((_, tail)) = inner.rsplit_once("(#")
        && let Some(n) = digits(tail).filter(|_| tail.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some((n, Forge::GitHub));
    }
    message.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("See merge request ")?;
        let (_, tail) = rest.rsplit_once('!')?;
        digits(tail).map(|n| (n, Forge::GitLab))
    })
}

/// The number at the start of `text`.
fn digits(text: &str) -> Option<u64> {
    let end = text.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(text.len());
    text[..end].parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(message: &str, web_url: Option<&str>) -> Option<(u64, Option<String>)> {
        pull_request(message, web_url).map(|p| (p.number, p.url))
    }

    #[test]
    fn squash_merge_and_gitlab_subjects_name_their_request() {
        let github = Some("https://github.com/shop/checkout");
        assert_eq!(
            pr("Add fraud scoring (#412)", github),
            Some((412, Some("https://github.com/shop/checkout/pull/412".into())))
        );
        assert_eq!(
            pr("Merge pull request #77 from dana/retry\n\nRetry declined charges", Some("https://github.com/shop/checkout.git/")),
            Some((77, Some("https://github.com/shop/checkout/pull/77".into())))
        );
        assert_eq!(
            pr("Retry card charges\n\nSee merge request shop/checkout!412\n", Some("https://gitlab.example.com/shop/checkout")),
            Some((412, Some("https://gitlab.example.com/shop/checkout/-/merge_requests/412".into())))
        );
        assert_eq!(pr("Add fraud scoring (#412)", None), Some((412, None)), "a number without a web_url");
        assert_eq!(
            pr("Bump parser (#12) (#413)", Some("https://gitlab.com/shop/checkout")),
            Some((413, Some("https://gitlab.com/shop/checkout/-/merge_requests/413".into()))),
            "the last number is the squash's; a GitLab host builds GitLab links"
        );
    }

    #[test]
    fn numbers_that_are_not_requests_are_ignored() {
        for message in [
            "Fix #412",
            "Handle (#412 and #413)",
            "Closes issue (#abc)",
            "Merge branch 'main' into retry",
            "Refactor (#0)",
            "",
        ] {
            assert_eq!(pr(message, Some("https://github.com/a/b")), None, "{message:?}");
        }
    }
}
