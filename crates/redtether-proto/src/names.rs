//! Names that travel between the ends and into files: device ids, user and operator names.

/// A device id, user or operator name: 1–64 of `A-Za-z0-9._@-`. Such a name is safe in a
/// certificate's common name, a URL path segment, an audit actor and a sled key.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        for ok in ["pump-1", "ann", "a.b@c_d", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "../x", "ä", "a:b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
