//! Distinguished names compared the way a directory compares them, so that the group DNs an
//! operator writes in `[auth.ldap] group_map` match the DNs the server returns however either
//! is spelled: attribute types and values case-insensitively (the matching rule of `cn`, `ou`,
//! `dc`, `uid` and the other naming attributes in use), spaces around `,`, `+` and `=` ignored,
//! and `\,` the same as `\2c`.

/// The canonical spelling of `dn` (RFC 4514): each attribute type and value in lower case,
/// no spaces around separators, values escaped as [`ldap3::dn_escape`] escapes them, and the
/// parts of a multi-valued RDN in sorted order.
pub fn normalize_dn(dn: &str) -> String {
    split_unescaped(dn, ',')
        .into_iter()
        .map(|rdn| {
            let mut parts: Vec<String> = split_unescaped(rdn, '+').into_iter().map(normalize_part).collect();
            parts.sort();
            parts.join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `type=value` in canonical form; a part without `=` (not a DN) is only trimmed and lowered.
fn normalize_part(part: &str) -> String {
    let Some((kind, value)) = part.split_once('=') else {
        return part.trim().to_lowercase();
    };
    let value = value.trim_start_matches(' ');
    // A trailing space is part of the value only when escaped.
    let mut end = value.len();
    while end > 0 && value[..end].ends_with(' ') && !value[..end - 1].ends_with('\\') {
        end -= 1;
    }
    let value = unescape(&value[..end]).to_lowercase();
    format!("{}={}", kind.trim().to_ascii_lowercase(), ldap3::dn_escape(value.as_str()))
}

/// `\c` → `c`, `\XX` → the byte XX (several of them may make one UTF-8 character).
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
            } else {
                out.push(bytes[i + 1]);
                i += 2;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` split at each `separator` that is not escaped with a backslash.
fn split_unescaped(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == separator => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_spaces_around_separators_do_not_matter() {
        let canonical = "cn=plant admins,ou=groups,dc=example,dc=test";
        assert_eq!(normalize_dn("CN=Plant Admins, OU=Groups ,DC=Example,  dc = test"), canonical);
        assert_eq!(normalize_dn(canonical), canonical);
    }

    #[test]
    fn escapes_are_compared_by_what_they_mean() {
        let a = normalize_dn(r"cn=Smith\, John,ou=people,dc=example,dc=test");
        let b = normalize_dn(r"CN=smith\2C john,ou=People,dc=example,dc=test");
        assert_eq!(a, b);
        assert_eq!(a, r"cn=smith\2c john,ou=people,dc=example,dc=test");
        assert_ne!(a, normalize_dn("cn=smith,cn=john,ou=people,dc=example,dc=test"));
    }

    #[test]
    fn an_escaped_trailing_space_stays() {
        assert_ne!(normalize_dn(r"cn=a\ ,dc=test"), normalize_dn("cn=a ,dc=test"));
        assert_eq!(normalize_dn("cn=a ,dc=test"), "cn=a,dc=test");
    }

    #[test]
    fn multi_valued_rdns_are_sorted() {
        assert_eq!(normalize_dn("uid=x+cn=Y,dc=test"), normalize_dn("CN=y + UID=x,dc=test"));
    }

    #[test]
    fn utf8_survives() {
        assert_eq!(normalize_dn(r"cn=J\C3\BCrgen,dc=test"), normalize_dn("cn=jürgen,dc=test"));
    }
}
