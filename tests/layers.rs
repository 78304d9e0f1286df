//! The import graph of `src/`: every module sits in a declared layer, no
//! module imports one of a higher layer, and no modules import each other,
//! not even inside one folder.
//!
//! The check reads the sources, not the compiler's view: every `use crate::…`
//! (and top-level `use super::…` / `use self::…`) statement and every
//! `crate::…` path in code outside `#[cfg(test)]` names the longest module
//! path it starts with. Tests may import anything; the binary (`main.rs`)
//! is the edge and is not checked.
//!
//! [`LAYERS`] is the declared order, lowest first. Data flows
//! `receive → extract → analyze → pipeline → attribute → alert / store`;
//! a stage imports what it hands data to and the vocabulary below it, never
//! a stage that hands data to it. Shared types sit at the bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first. A module belongs to the layer of the longest
/// prefix listed for it (`detect::event` is the event model; the other
/// `detect` modules are the detectors).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves: shared vocabulary and utilities, which import only each other",
        &[
            "text",
            "rng",
            "authorship",
            "clock",
            "auth",
            "blocking",
            "memory",
            "coverage",
            "service",
            "tls",
            "telemetry",
            "receive::wire",
            "receive::view",
            "receive::codec",
            "receive::otlp",
            "detect::kind",
            "detect::histogram",
        ],
    ),
    ("configuration", &["config"]),
    ("span facts: what one span says", &["extract"]),
    ("the event model: drift events, their details and statistics", &[
        "detect::stats",
        "detect::event",
        "detect::details",
    ]),
    ("the store: local events, outbox, snapshots and the fleet database", &["store", "fleet::store"]),
    ("analysis and detectors, with the fleet's merged baselines", &[
        "analyze",
        "detect",
        "fleet::aggregate",
        "fleet::baseline",
    ]),
    ("attribution", &["attribute"]),
    ("alerting", &["alert"]),
    ("the event pipeline", &["pipeline"]),
    ("fleet synchronisation", &["fleet"]),
    ("forwarding upstream", &["forward"]),
    ("recording raw requests", &["record"]),
    ("the receivers", &["receive"]),
    ("what is served: API, pages, admin, verdicts", &["expose", "verdict", "serve"]),
    ("wiring", &["server"]),
    ("commands and tools: comparison, gates, and the workshop (demo, eval, load, simulation)", &[
        "compare", "gate", "tools",
    ]),
    ("the crate root", &[""]),
];

/// Every module of `src/` (`a::b` for `src/a/b.rs` or `src/a/b/mod.rs`,
/// `""` for `lib.rs`) with its file's text, tests cut off.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("src/ is readable").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src/").with_extension("");
            let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["main"] {
                continue;
            }
            if parts == ["lib"] {
                parts.clear();
            }
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            out.insert(parts.join("::"), production_code(&text));
        }
    }
    out
}

/// The file without its `#[cfg(test)]` items and without comments.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut skipping_from: Option<usize> = None;
    let mut depth = 0usize;
    for line in text.lines() {
        let code = strip_comment(line);
        if skipping_from.is_none() && code.trim_start().starts_with("#[cfg(test)]") {
            skipping_from = Some(depth);
            continue;
        }
        let opens = code.matches('{').count();
        let closes = code.matches('}').count();
        if let Some(start) = skipping_from {
            depth = (depth + opens).saturating_sub(closes);
            // The test item ends when its braces close, or at a `;` for a
            // braceless item (`#[cfg(test)] use …;`).
            if depth == start && (closes > 0 || code.trim_end().ends_with(';')) {
                skipping_from = None;
            }
            continue;
        }
        depth = (depth + opens).saturating_sub(closes);
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// `line` up to a `//` comment that is not inside a string literal.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// The paths a `use` tree names: `a::{b, c::{d, e}}` is `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        return vec![path.to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(|item| expand(item).into_iter().map(move |rest| format!("{prefix}{rest}")))
        .collect()
}

/// The module a path names: its longest prefix that is a module.
fn module_of<'a>(segments: &[&str], known: &'a BTreeMap<String, String>) -> Option<&'a str> {
    (0..=segments.len())
        .rev()
        .find_map(|n| known.get_key_value(&segments[..n].join("::")).map(|(k, _)| k.as_str()))
}

/// The modules `module` imports (itself and the crate root excluded).
fn imports(module: &str, code: &str, known: &BTreeMap<String, String>) -> BTreeSet<String> {
    let own: Vec<&str> = if module.is_empty() { Vec::new() } else { module.split("::").collect() };
    let mut out = BTreeSet::new();
    // A path as written: `crate::…`, or `super::…` / `self::…` relative to
    // the file's module (`super` is the parent whether the file is `a/b.rs`
    // or `a/b/mod.rs`). Inside an inline `mod x { … }`, `super` and `self`
    // resolve within the file, so they are not followed there.
    let mut add = |path: &str, in_inline_mod: bool| {
        let segments: Vec<&str> = path.split("::").map(str::trim).filter(|s| !s.is_empty()).collect();
        let resolved = match segments.first().copied() {
            Some("crate") => segments[1..].to_vec(),
            Some("super") if !in_inline_mod => {
                let ups = segments.iter().take_while(|s| **s == "super").count();
                let mut base = own.clone();
                base.truncate(base.len().saturating_sub(ups));
                base.extend_from_slice(&segments[ups..]);
                base
            }
            Some("self") if !in_inline_mod => own.iter().copied().chain(segments[1..].iter().copied()).collect(),
            _ => return,
        };
        if let Some(target) = module_of(&resolved, known) {
            if target != module && !target.is_empty() {
                out.insert(target.to_owned());
            }
        }
    };
    let mut statement: Option<String> = None;
    let mut depth = 0usize;
    let mut inline_mods: Vec<usize> = Vec::new();
    for line in code.lines() {
        let trimmed = line.trim_start();
        let declaration = trimmed.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
        if declaration.starts_with("mod ") && trimmed.contains('{') {
            inline_mods.push(depth);
        }
        depth = (depth + line.matches('{').count()).saturating_sub(line.matches('}').count());
        while inline_mods.last().is_some_and(|&d| depth <= d) {
            inline_mods.pop();
        }
        let in_inline_mod = !inline_mods.is_empty();
        // `use` statements, which may span lines and nest braces.
        if statement.is_none() {
            let rest = trimmed
                .strip_prefix("pub(crate) use ")
                .or_else(|| trimmed.strip_prefix("pub use "))
                .or_else(|| trimmed.strip_prefix("use "));
            statement = rest.map(str::to_owned);
        } else if let Some(text) = statement.as_mut() {
            text.push_str(trimmed);
        }
        if let Some(text) = statement.take_if(|t| t.contains(';')) {
            for path in expand(text.split(';').next().unwrap_or_default()) {
                add(&path, in_inline_mod);
            }
            continue;
        }
        if statement.is_some() {
            continue;
        }
        // Paths written in code.
        for root in ["crate::", "super::", "self::"] {
            for (at, _) in line.match_indices(root) {
                let before = line[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
                    continue;
                }
                let path: String = line[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                add(&path, in_inline_mod);
            }
        }
    }
    out
}

/// The index in [`LAYERS`] of the longest prefix that covers `module`.
fn layer_of(module: &str) -> Option<usize> {
    let covers = |prefix: &str| {
        prefix.is_empty() && module.is_empty()
            || module == prefix
            || module.strip_prefix(prefix).is_some_and(|rest| rest.starts_with("::"))
    };
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, prefixes))| prefixes.iter().map(move |p| (i, *p)))
        .filter(|(_, p)| covers(p))
        .max_by_key(|(_, p)| p.len())
        .map(|(i, _)| i)
}

/// The cycles of the graph (its strongly connected components of more than
/// one module), by Tarjan's algorithm.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !tarjan.index.contains_key(v.as_str()) {
            tarjan.visit(v);
        }
    }
    tarjan.found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    known
        .iter()
        .map(|(module, code)| (module.clone(), imports(module, code, &known)))
        .collect()
}

#[test]
fn every_module_has_a_layer() {
    let unplaced: Vec<String> = graph().into_keys().filter(|m| layer_of(m).is_none()).collect();
    assert!(unplaced.is_empty(), "modules in no layer of tests/layers.rs's LAYERS: {unplaced:?}");
}

#[test]
fn no_module_imports_a_higher_layer() {
    let mut wrong = Vec::new();
    for (module, targets) in graph() {
        let Some(from) = layer_of(&module) else { continue };
        for target in targets {
            if let Some(to) = layer_of(&target).filter(|to| *to > from) {
                wrong.push(format!(
                    "{module} ({}) imports {target} ({})",
                    LAYERS[from].0, LAYERS[to].0
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layer order:\n{}", wrong.join("\n"));
}

#[test]
fn no_import_cycles() {
    let found = cycles(&graph());
    assert!(found.is_empty(), "modules that import each other: {found:?}");
}

#[test]
fn the_check_sees_imports_and_cycles() {
    let mut known = BTreeMap::new();
    for m in ["", "a", "a::b", "a::c", "c"] {
        known.insert(m.to_owned(), String::new());
    }
    let code = "use crate::a::b::{Thing, other::{X, Y}};\nuse super::c;\nfn f() { crate::c::g(); }\n// crate::nope\n\
                mod inline {\n    use super::super::Nope;\n    fn g() { super::Nope::new(); }\n}\n";
    let found = imports("a::b", &production_code(code), &known);
    assert_eq!(
        found,
        BTreeSet::from(["a::c".to_owned(), "c".to_owned()]),
        "`super::c` from a/b.rs is a::c; `crate::c::g` is c; comments name nothing"
    );
    let found = imports("a", &production_code("use crate::a::b::Thing;\nfn f() -> self::b::T { super::c::T }\n"), &known);
    assert_eq!(found, BTreeSet::from(["a::b".to_owned(), "c".to_owned()]));
    let tests_only = "fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n";
    assert!(imports("a", &production_code(tests_only), &known).is_empty());

    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["c".to_owned()]));
    graph.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycles(&graph), vec![vec!["a".to_owned(), "c".to_owned()]]);
    assert_eq!(layer_of("detect::event"), Some(3));
    assert_eq!(layer_of("detect::latency"), Some(5));
    assert_eq!(layer_of("telemetry::metrics"), Some(0), "the self-metrics registry is a leaf");
    assert_eq!(layer_of("fleet::store"), layer_of("store"));
    assert_eq!(layer_of("fleet::baseline"), layer_of("analyze"));
    assert!(layer_of("fleet::sync") > layer_of("pipeline"));
}
