//! The JSON Schemas in `docs/schemas/`, checked against real outputs.
use std::path::{Path, PathBuf};

use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas")
}

fn load(name: &str) -> Value {
    let path = dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every schema of the folder, under the ids their `$ref`s name.
fn validator(name: &str) -> jsonschema::Validator {
    let mut options = jsonschema::options();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let schema = load(stem);
        let id = schema["$id"]
            .as_str()
            .expect("every schema has an $id")
            .to_string();
        options = options.with_resource(id, jsonschema::Resource::from_contents(schema));
    }
    options
        .build(&load(name))
        .unwrap_or_else(|e| panic!("docs/schemas/{name}.json: {e}"))
}

/// Panics with every violation when `value` does not match schema `name`.
pub fn check(name: &str, value: &Value) {
    let v = validator(name);
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "output does not match docs/schemas/{name}.json:\n  {}\n{value:#}",
        errors.join("\n  ")
    );
}

/// Each line of a jsonl stream against `name`.
pub fn check_lines(name: &str, text: &str) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {e}: {line}"));
        check(name, &value);
    }
}
