//! The docs say which cargo feature each public item needs. docs.rs builds them with
//! `--cfg docsrs` on nightly, where `#[cfg_attr(docsrs, doc(cfg(…)))]` shows the
//! feature beside the item; stable rustdoc cannot check that, so this test does: every
//! `#[cfg(…)]` naming a feature on a `pub` item of a public module comes with
//! `#[cfg_attr(docsrs, doc(cfg(…)))]` of the same predicate. Public modules are those
//! reached from `src/lib.rs` through `pub mod` (not `#[doc(hidden)]`); an item of a
//! private module is public only through a `pub use`, which is checked where it is.

use std::path::{Path, PathBuf};

/// One item: the attributes above it (each on one line, whitespace collapsed), its
/// first line, and that line's number.
struct Item {
    attributes: Vec<String>,
    line: String,
    number: usize,
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The items of a file, each with the outer attributes right above it (doc comments
/// and comments between them are skipped; a blank line ends a group).
fn items(source: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut attributes = Vec::new();
    let mut open: Option<String> = None;
    for (index, raw) in source.lines().enumerate() {
        let line = raw.trim();
        if let Some(mut attribute) = open.take() {
            attribute.push(' ');
            attribute.push_str(line);
            if balanced(&attribute) {
                attributes.push(collapse(&attribute));
            } else {
                open = Some(attribute);
            }
        } else if line.is_empty() || line.starts_with("#![") {
            attributes.clear();
        } else if line.starts_with("//") {
            continue;
        } else if line.starts_with("#[") {
            if balanced(line) {
                attributes.push(collapse(line));
            } else {
                open = Some(line.to_owned());
            }
        } else {
            items.push(Item {
                attributes: std::mem::take(&mut attributes),
                line: line.to_owned(),
                number: index + 1,
            });
        }
    }
    items
}

fn balanced(attribute: &str) -> bool {
    attribute.matches('[').count() == attribute.matches(']').count()
}

/// The `#[cfg(…)]` attributes that name a feature, and the `doc(cfg(…))` each needs.
fn missing_doc_cfg(source: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for item in items(source) {
        if !item.line.starts_with("pub ") || item.attributes.iter().any(|a| a == "#[doc(hidden)]") {
            continue;
        }
        for attribute in &item.attributes {
            let Some(predicate) = attribute
                .strip_prefix("#[cfg(")
                .and_then(|rest| rest.strip_suffix(")]"))
            else {
                continue;
            };
            if !predicate.contains("feature") {
                continue;
            }
            let wanted = format!("#[cfg_attr(docsrs, doc(cfg({predicate})))]");
            if !item.attributes.contains(&wanted) {
                missing.push(format!(
                    "line {}: `{}` needs {wanted}",
                    item.number, item.line
                ));
            }
        }
    }
    missing
}

/// `src/lib.rs` and the files of the modules it makes public, recursively.
fn public_module_files() -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("lib.rs")];
    let mut next = 0;
    while next < files.len() {
        let file = files[next].clone();
        next += 1;
        let source = std::fs::read_to_string(&file).expect("read a source file");
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("lib.rs" | "mod.rs") => file.parent().expect("a folder").to_owned(),
            _ => file.with_extension(""),
        };
        for item in items(&source) {
            let Some(name) = item
                .line
                .strip_prefix("pub mod ")
                .and_then(|rest| rest.strip_suffix(';'))
            else {
                continue;
            };
            if item.attributes.iter().any(|a| a == "#[doc(hidden)]") {
                continue;
            }
            let flat = dir.join(format!("{name}.rs"));
            files.push(if flat.exists() {
                flat
            } else {
                dir.join(name).join("mod.rs")
            });
        }
    }
    files
}

#[test]
fn every_feature_gated_public_item_names_its_feature_in_the_docs() {
    let files = public_module_files();
    assert!(files.len() > 5, "found only {files:?}");
    let mut missing = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).expect("read a source file");
        for problem in missing_doc_cfg(&source) {
            missing.push(format!("{}, {problem}", file.display()));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn the_check_finds_a_missing_or_different_doc_cfg() {
    let source = r#"
/// Documented.
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use crate::backend::MysqlConnection;

/// No badge.
#[cfg(feature = "async")]
pub mod async_store;

#[cfg(all(feature = "async", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub const BOTH: u8 = 0;

#[cfg(feature = "postgres")]
pub(crate) mod postgres;

#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod internals;

#[cfg(test)]
pub fn helper() {}
"#;
    let missing = missing_doc_cfg(source);
    assert_eq!(missing.len(), 2, "{missing:#?}");
    assert!(
        missing[0].contains("pub mod async_store;"),
        "{}",
        missing[0]
    );
    assert!(missing[1].contains("pub const BOTH"), "{}", missing[1]);
}
