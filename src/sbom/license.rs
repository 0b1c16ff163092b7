//! A package's declared license (package.json `license`, or the legacy `licenses` list) as a
//! CycloneDX license choice that is always schema-valid:
//!
//! - a known SPDX id (any case) becomes `{"license":{"id":"MIT"}}` in the id's own spelling;
//! - a well-formed SPDX expression of known ids, e.g. `(MIT OR Apache-2.0)`, becomes
//!   `{"expression":"(MIT OR Apache-2.0)"}`;
//! - anything else (`SEE LICENSE IN LICENSE.md`, `UNLICENSED`, `Apache 2.0`) is kept as it is
//!   written, as `{"license":{"name":...}}`.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The SPDX ids the CycloneDX schema accepts, by their lowercase spelling.
fn spdx_ids() -> &'static HashMap<String, &'static str> {
    static IDS: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    IDS.get_or_init(|| {
        include_str!("spdx_ids.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|id| (id.to_ascii_lowercase(), id))
            .collect()
    })
}

/// The SPDX id `text` names, in its canonical spelling, if it is one.
pub fn spdx_id(text: &str) -> Option<&'static str> {
    spdx_ids().get(&text.trim().to_ascii_lowercase()).copied()
}

/// The CycloneDX `licenses` array for a package.json, or `None` when it declares no license.
pub fn from_manifest(manifest: &Value) -> Option<Value> {
    if let Some(text) = declared(&manifest["license"]) {
        return Some(json!([single(&text)]));
    }
    // The legacy form: "licenses": [{"type": "MIT", "url": "..."}, ...]. A list may only hold
    // ids and names (an expression has to stand alone).
    let list: Vec<Value> = manifest["licenses"]
        .as_array()?
        .iter()
        .filter_map(declared)
        .map(|text| match spdx_id(&text) {
            Some(id) => json!({ "license": { "id": id } }),
            None => json!({ "license": { "name": text } }),
        })
        .collect();
    (!list.is_empty()).then_some(Value::Array(list))
}

/// The license text of a `license` value: a string, or the legacy `{"type": ...}` object.
fn declared(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("type")?.as_str()?,
        _ => return None,
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn single(text: &str) -> Value {
    if let Some(id) = spdx_id(text) {
        json!({ "license": { "id": id } })
    } else if is_expression(text) {
        json!({ "expression": text })
    } else {
        json!({ "license": { "name": text } })
    }
}

/// Whether `text` is an SPDX license expression whose every license is a known id (or a
/// `LicenseRef-`): `id[+] [WITH exception]` terms joined by AND / OR, with parentheses.
pub fn is_expression(text: &str) -> bool {
    let spaced = text.replace('(', " ( ").replace(')', " ) ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut parser = Parser { tokens: &tokens, at: 0 };
    parser.expression() && parser.at == tokens.len()
}

struct Parser<'a> {
    tokens: &'a [&'a str],
    at: usize,
}

impl Parser<'_> {
    fn next(&mut self) -> Option<&str> {
        let token = self.tokens.get(self.at).copied();
        self.at += 1;
        token
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).copied()
    }

    /// term ((AND | OR) term)*
    fn expression(&mut self) -> bool {
        if !self.term() {
            return false;
        }
        while matches!(self.peek(), Some("AND" | "OR")) {
            self.at += 1;
            if !self.term() {
                return false;
            }
        }
        true
    }

    /// "(" expression ")" | license ["WITH" exception]
    fn term(&mut self) -> bool {
        match self.next() {
            Some("(") => self.expression() && self.next() == Some(")"),
            Some(token) => {
                if !is_license(token) {
                    return false;
                }
                if self.peek() == Some("WITH") {
                    self.at += 1;
                    return self.next().is_some_and(|e| spdx_id(e).is_some());
                }
                true
            }
            None => false,
        }
    }
}

fn is_license(token: &str) -> bool {
    let id = token.strip_suffix('+').unwrap_or(token);
    let reference = |prefix: &str| {
        id.strip_prefix(prefix)
            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    };
    !matches!(id, "AND" | "OR" | "WITH") && (spdx_id(id).is_some() || reference("LicenseRef-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn licenses(manifest: Value) -> Option<Value> {
        from_manifest(&manifest)
    }

    #[test]
    fn known_ids_become_ids_in_their_own_spelling() {
        assert_eq!(licenses(json!({"license": "MIT"})), Some(json!([{"license": {"id": "MIT"}}])));
        assert_eq!(licenses(json!({"license": "apache-2.0"})), Some(json!([{"license": {"id": "Apache-2.0"}}])));
        assert_eq!(
            licenses(json!({"license": " BlueOak-1.0.0 "})),
            Some(json!([{"license": {"id": "BlueOak-1.0.0"}}]))
        );
    }

    #[test]
    fn expressions_of_known_ids_become_expressions() {
        for text in [
            "(MIT OR Apache-2.0)",
            "MIT AND CC-BY-3.0",
            "(MIT OR CC0-1.0)",
            "GPL-2.0-only WITH Classpath-exception-2.0",
            "(BSD-2-Clause OR (MIT AND Apache-2.0))",
            "GPL-2.0+ OR LicenseRef-Proprietary",
        ] {
            assert_eq!(licenses(json!({"license": text})), Some(json!([{"expression": text}])), "{text}");
        }
    }

    #[test]
    fn anything_else_is_kept_as_a_name() {
        for text in [
            "SEE LICENSE IN LICENSE.md",
            "UNLICENSED",
            "Apache 2.0",
            "MIT or Apache-2.0",
            "(MIT OR Apache-2.0",
            "MIT OR",
            "MIT Apache-2.0",
            "Foo-1.0 OR MIT",
            "MIT WITH Apache-2.0-exception-that-does-not-exist",
            "()",
        ] {
            assert_eq!(licenses(json!({"license": text})), Some(json!([{"license": {"name": text}}])), "{text}");
        }
    }

    #[test]
    fn legacy_license_object_and_list() {
        assert_eq!(
            licenses(json!({"license": {"type": "MIT", "url": "http://x"}})),
            Some(json!([{"license": {"id": "MIT"}}]))
        );
        assert_eq!(
            licenses(json!({"licenses": [{"type": "MIT"}, {"type": "Apache 2.0"}, "ISC", 7]})),
            Some(json!([{"license": {"id": "MIT"}}, {"license": {"name": "Apache 2.0"}}, {"license": {"id": "ISC"}}]))
        );
    }

    #[test]
    fn no_license_declared() {
        assert_eq!(licenses(json!({})), None);
        assert_eq!(licenses(json!({"license": ""})), None);
        assert_eq!(licenses(json!({"license": 3})), None);
        assert_eq!(licenses(json!({"licenses": []})), None);
        assert_eq!(licenses(json!({"licenses": "MIT"})), None);
    }

    #[test]
    fn the_embedded_list_holds_the_common_npm_licenses() {
        for id in ["MIT", "ISC", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "0BSD", "CC0-1.0", "Python-2.0"] {
            assert_eq!(spdx_id(id), Some(id));
        }
        assert!(spdx_ids().len() > 800, "{}", spdx_ids().len());
        assert_eq!(spdx_id("# SPDX license"), None);
    }
}
