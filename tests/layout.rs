//! The workspace's module graph has no import cycles (issue 18): a module
//! may use its children, its siblings and shared leaves, but no two modules
//! may reach each other. A parent's own items that its children need live
//! in a leaf module of their own (`net/src/error.rs`, `stream/src/spdy/
//! protocol.rs`, `src/info/check.rs`, `src/streaming/negotiate.rs`).
//!
//! The graph is read from the sources: `crate::`, `super::` and `self::`
//! paths (and `use` groups), plus a parent's bare `child::` paths, each
//! resolved to the longest module prefix that is a file. Test modules are
//! left out. Runs as any user and touches nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each crate of the workspace: its name in paths and its source root.
const CRATES: &[(&str, &str)] = &[
    ("ucri", "src"),
    ("ucri_rootless", "rootless/src"),
    ("ucri_net", "net/src"),
    ("ucri_storage", "storage/src"),
    ("ucri_stream", "stream/src"),
    ("ucri_bench", "bench/src"),
    ("ucri_cri_api", "proto/src"),
];

type Module = Vec<String>;

/// No two modules reach each other, anywhere in the workspace. (The last
/// cycle, `Lifecycle` in `src/runtime/mod.rs` and the modules holding its
/// `impl` blocks, ended when the event stream, the lifecycle's error, the
/// bypass decisions, image volumes, the conmon watch and the cgroup
/// detection became leaves that take what they need as arguments.)
#[test]
fn no_module_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = modules(root);
    assert!(
        modules.len() > 100,
        "found only {} modules under {}: is the layout table stale?",
        modules.len(),
        root.display()
    );
    let graph = graph(&modules);
    let found: Vec<String> = cycles(&graph)
        .iter()
        .map(|cycle| {
            let names: BTreeSet<String> = cycle.iter().map(|m| m.join("::")).collect();
            describe(&names, &graph)
        })
        .collect();
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_reader_finds_paths_groups_and_cycles_and_skips_tests_and_comments() {
    let a: Module = vec!["k".into(), "a".into()];
    let b: Module = vec!["k".into(), "b".into()];
    let c: Module = vec!["k".into(), "c".into()];
    let sources = BTreeMap::from([
        (a.clone(), "use super::b::Thing;\n".to_owned()),
        (
            b.clone(),
            "use crate::{a::Other, c};\n#[cfg(test)]\nmod tests { use super::super::c::X; }\n"
                .to_owned(),
        ),
        (c.clone(), "// crate::a::Not, a comment\n".to_owned()),
    ]);
    let files: BTreeMap<Module, PathBuf> = sources
        .keys()
        .map(|m| (m.clone(), PathBuf::new()))
        .collect();
    let graph: BTreeMap<Module, BTreeSet<Module>> = sources
        .iter()
        .map(|(m, text)| (m.clone(), references(m, text, &files)))
        .collect();
    assert_eq!(graph[&a], BTreeSet::from([b.clone()]));
    assert_eq!(graph[&b], BTreeSet::from([a.clone(), c.clone()]));
    assert!(graph[&c].is_empty(), "comments are not references");
    assert_eq!(cycles(&graph), vec![vec![a, b]]);
}

/// Every file module of the workspace, by path (`ucri::runtime::oci`).
fn modules(root: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    for (krate, dir) in CRATES {
        let base = root.join(dir);
        for file in rust_files(&base) {
            let relative = file.strip_prefix(&base).expect("under its root");
            let mut path: Module = vec![(*krate).to_owned()];
            for part in relative.with_extension("").iter() {
                path.push(part.to_string_lossy().into_owned());
            }
            if matches!(
                path.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                path.pop();
            }
            found.insert(path, file);
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

fn graph(modules: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    modules
        .iter()
        .map(|(module, file)| {
            let text = std::fs::read_to_string(file).expect("read a source file");
            (module.clone(), references(module, &text, modules))
        })
        .collect()
}

/// The modules `module`'s source refers to.
fn references<T>(module: &Module, text: &str, modules: &BTreeMap<Module, T>) -> BTreeSet<Module> {
    let code = without_tests_and_comments(text);
    // `super` is the parent module, for `a/mod.rs` and `a/b.rs` alike.
    let parent: Module = module[..module.len().saturating_sub(1)].to_vec();
    let mut found = BTreeSet::new();
    let mut add = |path: Module| {
        if let Some(target) = longest_module(&path, modules) {
            if &target != module {
                found.insert(target);
            }
        }
    };
    for (start, keyword) in keyword_positions(&code) {
        let mut base = match keyword {
            "crate" => vec![module[0].clone()],
            "self" => module.clone(),
            _ => parent.clone(),
        };
        let mut rest = &code[start + keyword.len()..];
        while let Some(after) = rest.strip_prefix("::super") {
            base.pop();
            rest = after;
        }
        let (segments, rest) = segments(rest);
        let mut path = base.clone();
        path.extend(segments.iter().cloned());
        if let Some(group) = rest.strip_prefix("::{") {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for item in inner.split(',') {
                let item = item.trim().split(" as ").next().unwrap_or("").trim();
                let mut full = path.clone();
                if !item.is_empty() && item != "self" {
                    full.extend(item.split("::").map(|s| s.trim().to_owned()));
                }
                add(full);
            }
        } else {
            add(path);
        }
    }
    for child in modules
        .keys()
        .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
    {
        let name = child.last().expect("a name");
        if bare_path_uses(&code, name) {
            add(child.clone());
        }
    }
    found
}

/// `text` without `//` comments and without the `#[cfg(test)] mod …` that
/// follows the code.
fn without_tests_and_comments(text: &str) -> String {
    let mut kept = String::new();
    let mut after_cfg_test = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if after_cfg_test && trimmed.starts_with("mod ") {
            break;
        }
        after_cfg_test = trimmed.starts_with("#[cfg(test)]");
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        kept.push_str(code);
        kept.push('\n');
    }
    kept
}

/// Where `crate::`, `super::` or `self::` paths start (not inside a longer
/// name, not after another `::`).
fn keyword_positions(code: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for keyword in ["crate", "super", "self"] {
        let pattern = format!("{keyword}::");
        let mut from = 0;
        while let Some(i) = code[from..].find(&pattern) {
            let at = from + i;
            if starts_a_path(code, at) {
                found.push((at, keyword));
            }
            from = at + pattern.len();
        }
    }
    found
}

fn starts_a_path(code: &str, at: usize) -> bool {
    let before = &code[..at];
    let previous = before.chars().next_back();
    !previous.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
}

/// The `::name` segments at the start of `rest`, and what follows them.
fn segments(mut rest: &str) -> (Vec<String>, &str) {
    let mut names = Vec::new();
    while let Some(after) = rest.strip_prefix("::") {
        let len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if len == 0 {
            break;
        }
        names.push(after[..len].to_owned());
        rest = &after[len..];
    }
    (names, rest)
}

/// True when `code` uses `name::…` as a path of its own (a parent naming
/// its child module), outside `mod name;` lines.
fn bare_path_uses(code: &str, name: &str) -> bool {
    let pattern = format!("{name}::");
    code.lines()
        .filter(|line| {
            let t = line.trim_start();
            !(t.starts_with("mod ")
                || t.starts_with("pub mod ")
                || t.starts_with("pub(crate) mod "))
        })
        .any(|line| {
            line.match_indices(&pattern)
                .any(|(at, _)| starts_a_path(line, at))
        })
}

fn longest_module<T>(path: &Module, modules: &BTreeMap<Module, T>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains_key(prefix))
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let graph = self.graph;
            for w in graph.get(v).into_iter().flatten() {
                if !graph.contains_key(w) {
                    continue;
                }
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
                    component.push(w.clone());
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
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

fn describe(names: &BTreeSet<String>, graph: &BTreeMap<Module, BTreeSet<Module>>) -> String {
    let mut lines = vec![format!(
        "  cycle of {}:",
        names.iter().cloned().collect::<Vec<_>>().join(", ")
    )];
    for (from, targets) in graph {
        if !names.contains(&from.join("::")) {
            continue;
        }
        for to in targets.iter().filter(|t| names.contains(&t.join("::"))) {
            lines.push(format!("    {} -> {}", from.join("::"), to.join("::")));
        }
    }
    lines.join("\n")
}
