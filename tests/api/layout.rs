//! The shape of `src/` that the README's Layout promises, checked: no two top-level modules
//! import each other (directly or around a longer loop), `domain` and `upstream` know no tonic,
//! and the simulator shares no product module.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// Top-level module -> the top-level modules its non-test code names as `crate::<module>`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
            let module = first.trim_end_matches(".rs").to_owned();
            if module == "lib" || module == "main" || relative.ends_with("simulator/tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            let uses = graph.entry(module.clone()).or_default();
            for line in code.lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let rest = &line[at + "crate::".len()..];
                    let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if !name.is_empty() && name != module {
                        uses.insert(name);
                    }
                }
            }
            // Grouped imports span lines: take the top-level names of every `use crate::{ ... };`.
            let mut rest = code;
            while let Some(at) = rest.find("use crate::{") {
                let after = &rest[at + "use crate::{".len()..];
                let end = after.find("};").unwrap_or(after.len());
                let (mut depth, mut item) = (0, String::new());
                for c in after[..end].chars() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            push_head(&item, &module, uses);
                            item.clear();
                        }
                        _ if depth == 0 => item.push(c),
                        _ => {}
                    }
                }
                push_head(&item, &module, uses);
                rest = &after[end..];
            }
        }
    }
    graph
}

fn push_head(item: &str, module: &str, uses: &mut BTreeSet<String>) {
    let head = item.trim().split("::").next().unwrap_or("").trim();
    if !head.is_empty() && head != module && head != "self" && head.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    {
        uses.insert(head.to_owned());
    }
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let graph = module_graph();
    assert!(graph.contains_key("service") && graph.contains_key("upstream"), "{graph:?}");
    // Depth-first search for a loop.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("module cycle: {} -> {m}", path[at..].join(" -> "));
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for next in graph.get(m).into_iter().flatten() {
            if graph.contains_key(next.as_str()) {
                visit(next, graph, path, done);
            }
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn domain_and_upstream_know_no_tonic_and_the_simulator_stands_alone() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for dir in ["domain", "upstream"] {
        for entry in std::fs::read_dir(src.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            assert!(!code.contains("tonic::"), "{} uses tonic", path.display());
        }
    }
    let graph = module_graph();
    let simulator = &graph["simulator"];
    assert!(simulator.is_empty(), "the simulator imports product modules: {simulator:?}");
}
