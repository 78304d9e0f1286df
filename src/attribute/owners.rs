//! Who owns the files a suspect changed, from the repository's CODEOWNERS
//! at the drifting revision, so an alert reaches the owning team.
//!
//! GitHub reads the first of `.github/CODEOWNERS`, `CODEOWNERS` and
//! `docs/CODEOWNERS`; GitLab the same names plus `.gitlab/CODEOWNERS`.
//! Patterns follow gitignore rules (matched with gix's own glob engine);
//! the last matching line decides. GitLab's `[Section]` headers (with
//! `^[Optional]` and default owners after the header) split the file: each
//! section is decided on its own and their owners add up. A line that
//! names a pattern and no owner leaves the path unowned.

use gix::bstr::BStr;
use gix::glob::pattern::Case;
use gix::glob::wildmatch::Mode;

/// Where CODEOWNERS may live, in the order forges look.
pub(crate) const LOCATIONS: &[&str] = &[".github/CODEOWNERS", ".gitlab/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"];
/// Owners reported per event.
pub(crate) const MAX_OWNERS: usize = 10;

struct Rule {
    pattern: gix::glob::Pattern,
    /// The pattern's last component is `*`: its directory's files, not
    /// those of deeper directories (GitHub's reading of `docs/*`).
    shallow: bool,
    owners: Vec<String>,
}

/// A parsed CODEOWNERS file.
#[derive(Default)]
pub(crate) struct CodeOwners {
    /// Sections in file order; a file without headers has one.
    sections: Vec<Vec<Rule>>,
}

impl CodeOwners {
    pub(crate) fn parse(text: &str) -> CodeOwners {
        let mut sections: Vec<Vec<Rule>> = vec![Vec::new()];
        let mut defaults: Vec<String> = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // GitLab: `[Section]`, `^[Optional]`, `[Section][2]`, then
            // optional default owners.
            let header = line.strip_prefix('^').unwrap_or(line);
            if header.starts_with('[')
                && let Some(end) = header.find(']')
            {
                let mut rest = &header[end + 1..];
                if rest.starts_with('[')
                    && let Some(close) = rest.find(']')
                {
                    rest = &rest[close + 1..];
                }
                // `[Dd]ocs/ @team` is a pattern with a character class.
                if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                    defaults = owners_of(rest);
                    sections.push(Vec::new());
                    continue;
                }
            }
            let (pattern, owners) = split_pattern(line);
            let owners = match owners_of(owners) {
                owners if owners.is_empty() => defaults.clone(),
                owners => owners,
            };
            let Some(parsed) = gix::glob::Pattern::from_bytes_without_negation(pattern.as_bytes()) else {
                continue;
            };
            if let Some(section) = sections.last_mut() {
                section.push(Rule {
                    pattern: parsed,
                    shallow: pattern.trim_end_matches('/').ends_with("/*"),
                    owners,
                });
            }
        }
        CodeOwners { sections }
    }

    /// The owners of `path` (from the repository root).
    pub(crate) fn owners_of(&self, path: &str) -> Vec<String> {
        let mut found = Vec::new();
        for section in &self.sections {
            if let Some(rule) = section.iter().rev().find(|rule| matches(rule, path)) {
                for owner in &rule.owners {
                    if !found.contains(owner) {
                        found.push(owner.clone());
                    }
                }
            }
        }
        found
    }
}

/// The pattern (with `\ ` escapes for spaces) and the rest of the line.
fn split_pattern(line: &str) -> (String, &str) {
    let mut pattern = String::new();
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, next)) = chars.next() {
                    if next != ' ' {
                        pattern.push('\\');
                    }
                    pattern.push(next);
                }
            }
            c if c.is_whitespace() => return (pattern, &line[i..]),
            c => pattern.push(c),
        }
    }
    (pattern, "")
}

/// `@user`, `@org/team` and e-mail addresses, up to a comment.
fn owners_of(text: &str) -> Vec<String> {
    text.split_whitespace()
        .take_while(|word| !word.starts_with('#'))
        .filter(|word| word.starts_with('@') || word.contains('@'))
        .map(str::to_owned)
        .collect()
}

/// Whether `rule` owns `path`: the path itself or one of its directories
/// matches (a directory's pattern owns everything below it).
fn matches(rule: &Rule, path: &str) -> bool {
    let test = |candidate: &str, is_dir: bool| {
        let basename = candidate.rfind('/').map(|i| i + 1);
        rule.pattern.matches_repo_relative_path(
            BStr::new(candidate.as_bytes()),
            basename,
            Some(is_dir),
            Case::Sensitive,
            Mode::NO_MATCH_SLASH_LITERAL,
        )
    };
    if test(path, false) {
        return true;
    }
    if rule.shallow {
        return false;
    }
    path.match_indices('/').any(|(i, _)| test(&path[..i], true))
}

/// The owners of `paths`, in order of first appearance, at most
/// [`MAX_OWNERS`].
pub(crate) fn owners_of_paths<'a>(owners: &CodeOwners, paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for path in paths {
        for owner in owners.owners_of(path) {
            if found.len() < MAX_OWNERS && !found.contains(&owner) {
                found.push(owner);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const GITHUB: &str = "\
# Default owners
*       @shop/platform

*.js    @shop/frontend
/services/orders/ @shop/orders @dana
services/billing/**/*.py billing@shop.example
docs/*  @shop/docs
/build/logs/
apps/   @shop/apps
my\\ file.txt @shop/odd
[Rr]eleases/ @shop/release
";

    #[test]
    fn the_last_matching_github_line_decides() {
        let owners = CodeOwners::parse(GITHUB);
        assert_eq!(owners.owners_of("README.md"), ["@shop/platform"]);
        assert_eq!(owners.owners_of("web/app.js"), ["@shop/frontend"]);
        // A later directory rule beats the earlier *.js.
        assert_eq!(owners.owners_of("services/orders/src/orders.js"), ["@shop/orders", "@dana"]);
        assert_eq!(owners.owners_of("services/billing/src/pay/charge.py"), ["billing@shop.example"]);
        assert_eq!(owners.owners_of("docs/intro.md"), ["@shop/docs"]);
        assert_eq!(owners.owners_of("docs/guides/deep.md"), ["@shop/platform"], "docs/* is one level");
        assert!(owners.owners_of("build/logs/today.log").is_empty(), "a line without owners unowns");
        assert_eq!(owners.owners_of("web/apps/x.txt"), ["@shop/apps"], "apps/ anywhere");
        assert_eq!(owners.owners_of("my file.txt"), ["@shop/odd"]);
        assert_eq!(owners.owners_of("Releases/notes.md"), ["@shop/release"], "a character class, not a section");
    }

    #[test]
    fn gitlab_sections_each_decide_and_add_up() {
        let owners = CodeOwners::parse(
            "\
* @ops

[Backend] @backend-team
services/
services/orders/ @orders-team

^[Docs][2] @tech-writers
*.md
",
        );
        assert_eq!(owners.owners_of("services/orders/README.md"), ["@ops", "@orders-team", "@tech-writers"]);
        assert_eq!(owners.owners_of("services/cart/cart.go"), ["@ops", "@backend-team"]);
        assert_eq!(owners.owners_of("Makefile"), ["@ops"]);
        assert_eq!(
            owners_of_paths(&owners, ["services/cart/cart.go", "Makefile", "services/cart/README.md"]),
            ["@ops", "@backend-team", "@tech-writers"]
        );
    }
}
