//! docs/ARCHITECTURE.md stays true to the code: every file, folder, type and
//! function it names in a code reference exists, and every crate of the
//! workspace is described.
//!
//! A code reference is a backticked span of the form `path/to/file.rs`,
//! `path/to/dir/`, or `path/to/file.rs: Item` where `Item` is `name`,
//! `Type::name` or `name()`; paths are relative to the repository root.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The backticked spans of `text`.
fn spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Does `src` define `name` (a fn, type, trait, const, static or module)?
fn defines(src: &str, name: &str) -> bool {
    [
        "fn ", "struct ", "enum ", "trait ", "const ", "static ", "type ", "mod ",
    ]
    .iter()
    .any(|kw| {
        src.match_indices(&format!("{kw}{name}")).any(|(i, m)| {
            let after = src[i + m.len()..].chars().next().unwrap_or(' ');
            !(after.is_alphanumeric() || after == '_')
        })
    })
}

/// Check one span; `Ok(false)` when it is not a code reference.
fn check(root: &Path, span: &str) -> Result<bool, String> {
    let (path, item) = match span.split_once(": ") {
        Some((p, i)) => (p.trim(), Some(i.trim())),
        None => (span.trim(), None),
    };
    let is_file = path.ends_with(".rs") && !path.contains(' ') && path.contains('/');
    let is_dir = path.ends_with('/') && !path.contains(' ') && path.len() > 1 && item.is_none();
    if !is_file && !is_dir {
        return Ok(false);
    }
    let full = root.join(path);
    if is_dir {
        return if full.is_dir() {
            Ok(true)
        } else {
            Err(format!("`{span}`: no folder {path}"))
        };
    }
    let src = std::fs::read_to_string(&full).map_err(|e| format!("`{span}`: {path}: {e}"))?;
    let Some(item) = item else {
        return Ok(true);
    };
    let item = item.trim_end_matches("()");
    let mut parts: Vec<&str> = item.split("::").collect();
    let name = parts.pop().unwrap_or_default();
    if !defines(&src, name) {
        return Err(format!("`{span}`: {path} defines no `{name}`"));
    }
    if let Some(ty) = parts.last() {
        if !defines(&src, ty)
            && !src.contains(&format!(" for {ty}"))
            && !src.contains(&format!("impl {ty}"))
        {
            return Err(format!("`{span}`: {path} has no type `{ty}`"));
        }
    }
    Ok(true)
}

#[test]
fn every_code_reference_in_the_architecture_doc_exists() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let mut checked = 0;
    let errors: Vec<String> = spans(&doc)
        .into_iter()
        .filter_map(|s| match check(&root, s) {
            Ok(true) => {
                checked += 1;
                None
            }
            Ok(false) => None,
            Err(e) => Some(e),
        })
        .collect();
    assert!(
        errors.is_empty(),
        "docs/ARCHITECTURE.md is out of date:\n{}",
        errors.join("\n")
    );
    assert!(
        checked >= 40,
        "only {checked} code references checked: the doc lost its hops?"
    );
}

#[test]
fn the_architecture_doc_describes_every_crate_of_the_workspace() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap();
    for m in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        assert!(
            doc.contains(&format!("`{m}/`")),
            "docs/ARCHITECTURE.md does not describe `{m}/`"
        );
    }
}

#[test]
fn the_checker_catches_what_does_not_exist() {
    let root = root();
    assert_eq!(check(&root, "bin/src/main.rs"), Ok(true));
    assert_eq!(check(&root, "bin/src/main.rs: main()"), Ok(true));
    assert_eq!(check(&root, "not code"), Ok(false));
    assert!(check(&root, "bin/src/nothing_here.rs").is_err());
    assert!(check(&root, "bin/src/main.rs: no_such_function").is_err());
    assert!(check(&root, "bin/src/main.rs: NoSuchType::main").is_err());
    assert!(check(&root, "no/such/dir/").is_err());
}
