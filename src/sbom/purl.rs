//! Package URLs (purl) for npm packages and for the two components that are not npm packages
//! (Node.js and redtether itself).
//!
//! The canonical form is the one of the reference implementation, `packageurl-js`: each part is
//! percent-encoded as JavaScript's `encodeURIComponent` does, `:` stays as it is, and so does
//! `+` in a version; npm's type rules lowercase the scope and the name. A scoped package
//! `@scope/name` has the namespace `@scope`, so its purl is `pkg:npm/%40scope/name@1.2.3`.

/// The purl of the npm package `name` (`name` or `@scope/name`) at `version`.
pub fn npm(name: &str, version: &str) -> String {
    let (scope, bare) = split_scope(name);
    let mut purl = String::from("pkg:npm/");
    if let Some(scope) = scope {
        purl.push_str(&encode(&scope.to_lowercase(), ""));
        purl.push('/');
    }
    purl.push_str(&encode(&bare.to_lowercase(), ""));
    purl.push('@');
    purl.push_str(&encode(version, "+"));
    purl
}

/// `pkg:generic/<name>@<version>`, for software that is not in a package registry.
pub fn generic(name: &str, version: &str) -> String {
    format!("pkg:generic/{}@{}", encode(name, ""), encode(version, "+"))
}

/// Splits `@scope/name` into its scope (with the `@`) and its name; other names have no scope.
pub fn split_scope(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((scope, bare)) if scope.starts_with('@') => (Some(scope), bare),
        _ => (None, name),
    }
}

/// Percent-encodes everything `encodeURIComponent` encodes, except `:` and the bytes in `keep`.
fn encode(text: &str, keep: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let c = byte as char;
        if c.is_ascii_alphanumeric() || "-_.!~*'():".contains(c) || (c.is_ascii() && keep.contains(c)) {
            out.push(c);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_package() {
        assert_eq!(npm("express", "4.22.2"), "pkg:npm/express@4.22.2");
    }

    #[test]
    fn scoped_package_encodes_the_at_sign_of_its_namespace() {
        assert_eq!(npm("@node-red/runtime", "4.1.15"), "pkg:npm/%40node-red/runtime@4.1.15");
    }

    #[test]
    fn npm_names_are_lowercased_as_the_npm_type_requires() {
        assert_eq!(npm("JSONStream", "1.3.5"), "pkg:npm/jsonstream@1.3.5");
        assert_eq!(npm("@Scope/Pkg", "1.0.0"), "pkg:npm/%40scope/pkg@1.0.0");
    }

    #[test]
    fn versions_keep_plus_and_encode_what_uri_components_encode() {
        assert_eq!(npm("a", "1.0.0-rc.1+build.5"), "pkg:npm/a@1.0.0-rc.1+build.5");
        assert_eq!(npm("a", "1.0 beta/2"), "pkg:npm/a@1.0%20beta%2F2");
        assert_eq!(npm("a", "1.0.0#x@y"), "pkg:npm/a@1.0.0%23x%40y");
    }

    #[test]
    fn non_ascii_is_encoded_as_utf8_bytes() {
        assert_eq!(npm("é", "1"), "pkg:npm/%C3%A9@1");
    }

    #[test]
    fn a_slash_without_a_scope_is_part_of_the_name() {
        assert_eq!(split_scope("a/b"), (None, "a/b"));
        assert_eq!(npm("a/b", "1"), "pkg:npm/a%2Fb@1");
        assert_eq!(split_scope("@s/b"), (Some("@s"), "b"));
    }

    #[test]
    fn generic_purls() {
        assert_eq!(generic("node", "20.20.2"), "pkg:generic/node@20.20.2");
        assert_eq!(generic("redtether", "0.1.0"), "pkg:generic/redtether@0.1.0");
    }
}
