//! npm's Subresource Integrity strings (`sha512-<base64>`, as in package-lock.json) into
//! CycloneDX hashes (`{"alg":"SHA-512","content":"<hex>"}`).

use base64::Engine;

/// One hash of a package's tarball.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hash {
    /// The CycloneDX algorithm name, e.g. `SHA-512`.
    pub alg: &'static str,
    /// The digest, lowercase hex.
    pub content: String,
}

impl Hash {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "alg": self.alg, "content": self.content })
    }
}

/// The hashes in an integrity string. It may hold several, separated by whitespace; each may
/// carry `?options`. Algorithms CycloneDX has no name for, bad base64 and digests of the wrong
/// length are left out, so what comes back is always schema-valid.
pub fn from_integrity(integrity: &str) -> Vec<Hash> {
    let mut hashes: Vec<Hash> = integrity.split_whitespace().filter_map(one).collect();
    hashes.sort();
    hashes.dedup();
    hashes
}

fn one(item: &str) -> Option<Hash> {
    let (alg, rest) = item.split_once('-')?;
    let (alg, len) = match alg.to_ascii_lowercase().as_str() {
        "sha1" => ("SHA-1", 20),
        "sha256" => ("SHA-256", 32),
        "sha384" => ("SHA-384", 48),
        "sha512" => ("SHA-512", 64),
        _ => return None,
    };
    let digest = rest.split_once('?').map_or(rest, |(digest, _options)| digest);
    let bytes = base64::engine::general_purpose::STANDARD.decode(digest).ok()?;
    (bytes.len() == len).then(|| Hash { alg, content: hex::encode(bytes) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha512_integrity_becomes_hex() {
        // sha512("") in base64 and in hex.
        let integrity =
            "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";
        assert_eq!(
            from_integrity(integrity),
            [Hash {
                alg: "SHA-512",
                content: "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
                          47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
                    .into()
            }]
        );
    }

    #[test]
    fn sha1_sha256_sha384_too() {
        // The digests of "abc".
        let hashes = from_integrity(
            "sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0= sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0= \
             sha384-ywB1P0WjXou1oD1pmsZQBycsMqsO3tFjGotgWkP/W+2AhgcroefMI1i67KE0yCWn",
        );
        assert_eq!(
            hashes,
            [
                Hash { alg: "SHA-1", content: "a9993e364706816aba3e25717850c26c9cd0d89d".into() },
                Hash {
                    alg: "SHA-256",
                    content: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
                },
                Hash {
                    alg: "SHA-384",
                    content: "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
                              8086072ba1e7cc2358baeca134c825a7"
                        .into()
                },
            ]
        );
    }

    #[test]
    fn options_after_the_digest_are_ignored() {
        let hashes = from_integrity("sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=?foo=bar");
        assert_eq!(hashes[0].content, "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn unknown_algorithms_bad_base64_and_wrong_lengths_are_left_out() {
        assert_eq!(from_integrity("md5-kAFQmDzST7DWlj99KOF/cg=="), []);
        assert_eq!(from_integrity("sha512-not*base64"), []);
        // A SHA-1-sized digest labelled sha512.
        assert_eq!(from_integrity("sha512-qZk+NkcGgWq6PiVxeFDCbJzQ2J0="), []);
        assert_eq!(from_integrity(""), []);
        assert_eq!(from_integrity("garbage"), []);
    }

    #[test]
    fn repeated_hashes_appear_once() {
        let h = "sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=";
        assert_eq!(from_integrity(&format!("{h} {h}")).len(), 1);
    }

    #[test]
    fn json_shape() {
        let h = Hash { alg: "SHA-1", content: "ab".into() };
        assert_eq!(h.to_json(), serde_json::json!({"alg": "SHA-1", "content": "ab"}));
    }
}
