//! The shape the node crates keep (issue 16): no import cycle between the files of the agent, the kubelet,
//! the shim or the streaming server; the kubelet's worker and every CRI call module short enough to read;
//! `docs/architecture.md`'s dependency table as the Cargo.toml files say. It reads the sources as text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The code of a Rust file with comments, string and char literals blanked out, and without its unit tests.
fn code(src: &str) -> String {
    let src = match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    };
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |j| j + 2);
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].bytes().take_while(|&c| c == b'#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            i += rest[body..]
                .find(&close)
                .map_or(rest.len(), |j| body + j + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && (rest.get(2..3) == Some("'") || rest.get(1..2) == Some("\\")) {
            // A char literal ('x', '\n'), not a lifetime.
            i += rest[2..].find('\'').map_or(rest.len(), |j| j + 3);
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The first segment of each path a `crate::` reference names: `crate::a::b` gives `a`, `crate::{a, b::c}`
/// gives `a` and `b`.
fn crate_refs(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            out.push(ident(item.trim()));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty() && s != "self");
    out
}

/// A crate's files as modules (a submodule's file counts as its top-level module's) and which modules each
/// imports. Names the crate root re-exports (`pub use m::Name`) count as imports of their module.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let module_of = |p: &Path| -> String {
        let rel = p.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        first.trim_end_matches(".rs").to_owned()
    };
    let modules: BTreeSet<String> = files.iter().map(|p| module_of(p)).collect();
    let mut reexports = BTreeMap::new();
    for line in code(&read(&src.join("lib.rs"))).lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = path.trim_end_matches(';').split_once("::") else {
            continue;
        };
        if !modules.contains(module) {
            continue;
        }
        let items = items.rsplit("::").next().unwrap();
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = item.split(" as ").last().unwrap().trim();
            reexports.insert(name.to_owned(), module.to_owned());
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(f);
        if from == "lib" {
            continue;
        }
        let deps = graph.entry(from.clone()).or_default();
        for r in crate_refs(&code(&read(f))) {
            let to = if modules.contains(&r) {
                Some(r)
            } else {
                reexports.get(&r).cloned()
            };
            if let Some(to) = to.filter(|t| *t != from && t != "lib") {
                deps.insert(to);
            }
        }
    }
    graph
}

/// A cycle in the graph, as the modules on it, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_checker_finds_imports_and_cycles() {
    let src = "use crate::{a, b::{C, D}, self};\n// crate::commented\nlet s = \"crate::quoted\";\n\
               fn f<'a>(x: &'a str) -> char { crate::c::g(); 'x' }\nuse crate::Reexported;";
    assert_eq!(crate_refs(&code(src)), ["a", "b", "c", "Reexported"]);
    let g = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(cycle(&g(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap(),
        ["a", "b", "c", "a"]
    );
}

#[test]
fn no_import_cycle_between_the_files_of_the_node_crates() {
    for krate in ["agent", "agent/kubelet", "agent/streaming", "shim"] {
        let graph = module_graph(&root().join(krate).join("src"));
        assert!(graph.len() > 5, "{krate}: {graph:?}");
        if let Some(c) = cycle(&graph) {
            panic!("{krate}: the modules {} import each other", c.join(" → "));
        }
    }
}

/// Lines a module may have before it no longer reads in one sitting.
const MODULE_LINES: usize = 400;

fn lines(path: &Path) -> usize {
    read(path).lines().count()
}

#[test]
fn the_kubelet_worker_and_every_cri_call_module_stay_short() {
    let worker = root().join("agent/kubelet/src/worker.rs");
    assert!(
        lines(&worker) <= MODULE_LINES,
        "{}: {} lines",
        worker.display(),
        lines(&worker)
    );
    // A CRI call module implements `service::Call` for its requests.
    let src = root().join("agent/src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .filter(|e| read(&e.path()).contains("impl Call for cri::"))
        .map(|e| {
            e.file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    assert!(modules.len() >= 20, "{modules:?}");
    for m in modules {
        let p = src.join(format!("{m}.rs"));
        assert!(
            lines(&p) <= MODULE_LINES,
            "{}: {} lines",
            p.display(),
            lines(&p)
        );
    }
}

/// `[dependencies]` entries of a Cargo.toml that are workspace crates, by their name without `basalt-`.
fn basalt_dependencies(manifest: &str) -> (String, BTreeSet<String>) {
    let mut section = "";
    let (mut name, mut deps) = (String::new(), BTreeSet::new());
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let key = line.split(['=', '.', ' ']).next().unwrap_or("");
        if section == "[package]" && key == "name" {
            name = line.split('"').nth(1).unwrap_or("").to_owned();
        }
        if section == "[dependencies]" {
            if let Some(dep) = key.strip_prefix("basalt-") {
                deps.insert(dep.to_owned());
            }
        }
    }
    (name, deps)
}

#[test]
fn the_architecture_docs_dependency_table_matches_the_manifests() {
    let workspace = read(&root().join("Cargo.toml"));
    let members = workspace
        .split("members = [")
        .nth(1)
        .and_then(|m| m.split(']').next())
        .unwrap();
    let mut manifests = vec![root().join("Cargo.toml")];
    manifests.extend(
        members
            .split(',')
            .map(|m| m.trim().trim_matches('"'))
            .filter(|m| !m.is_empty())
            .map(|m| root().join(m).join("Cargo.toml")),
    );
    // `| `crate` | `path/` | dep, dep | never does |`; a row marked *(planned)* names a crate to come.
    let doc = read(&root().join("docs/architecture.md"));
    let table: BTreeMap<String, (BTreeSet<String>, bool)> = doc
        .lines()
        .filter(|l| l.starts_with("| `basalt"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let deps = cells[3]
                .split(',')
                .map(|d| d.trim().trim_matches('`').to_owned())
                .filter(|d| !d.is_empty() && d != "—")
                .collect();
            (
                cells[1].trim_matches('`').to_owned(),
                (deps, l.contains("*(planned)*")),
            )
        })
        .collect();
    let mut documented = 0;
    for m in manifests {
        let (name, deps) = basalt_dependencies(&read(&m));
        let Some((listed, planned)) = table.get(&name) else {
            panic!(
                "docs/architecture.md has no row for {name} ({})",
                m.display()
            );
        };
        if !planned {
            assert_eq!(
                listed, &deps,
                "docs/architecture.md: what {name} depends on"
            );
            documented += 1;
        }
    }
    assert!(documented >= 15, "{documented} crates checked");
}
