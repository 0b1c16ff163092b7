//! The header of a stream the hub opens for one forwarded client connection, before its raw
//! bytes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamHeader {
    /// What the bytes after the header are.
    pub kind: StreamKind,
    /// The hub's signed statement of who the operator is, for the gate.
    pub assertion: Option<String>,
}

/// What a forwarded stream carries. A kind this side does not know makes the header malformed:
/// the stream is closed before any byte of it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// An HTTP/1.1 connection to the gate.
    Http,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_plain_strings_and_unknown_ones_are_refused() {
        let header = StreamHeader { kind: StreamKind::Http, assertion: None };
        assert_eq!(serde_json::to_string(&header).unwrap(), r#"{"kind":"http","assertion":null}"#);
        assert!(serde_json::from_str::<StreamHeader>(r#"{"kind":"ssh","assertion":null}"#).is_err());
    }
}
