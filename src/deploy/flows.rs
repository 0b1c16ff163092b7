//! What a snapshot's flows need and what modules provide: the node types used, the types a
//! module's HTML registers. Pure. (The flows' hash is the protocol's: `redtether_proto::deployment::flows_hash`.)

use std::collections::BTreeSet;

/// Types that are not nodes: the editor's containers. `subflow:<id>` instances are provided by
/// the subflow definitions in the same flows.
const STRUCTURAL: &[&str] = &["tab", "subflow", "group", "junction"];

/// The node types `flows` uses that some module must provide.
pub fn types_needed(flows: &[serde_json::Value]) -> BTreeSet<String> {
    let subflows: BTreeSet<&str> = flows
        .iter()
        .filter(|n| n.get("type").and_then(|t| t.as_str()) == Some("subflow"))
        .filter_map(|n| n.get("id").and_then(|i| i.as_str()))
        .collect();
    flows
        .iter()
        .filter_map(|n| n.get("type").and_then(|t| t.as_str()))
        .filter(|t| !STRUCTURAL.contains(t))
        .filter(|t| !t.strip_prefix("subflow:").is_some_and(|id| subflows.contains(id)))
        .map(str::to_string)
        .collect()
}

/// The types a node module's HTML file registers, as Node-RED finds them when it loads the
/// module: every `RED.nodes.registerType("name"` call.
pub fn types_registered_in_html(html: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = html;
    while let Some(at) = rest.find("registerType(") {
        rest = &rest[at + "registerType(".len()..];
        let arg = rest.trim_start();
        let Some(quote) = arg.chars().next().filter(|c| matches!(c, '"' | '\'' | '`')) else { continue };
        if let Some(end) = arg[1..].find(quote) {
            let name = &arg[1..1 + end];
            if !name.is_empty() && !name.contains(['\n', '$']) {
                found.insert(name.to_string());
            }
        }
    }
    found
}

pub use redtether_proto::deployment::flows_hash;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_and_defined_subflows_need_no_module() {
        let flows = vec![
            json!({"id": "t", "type": "tab"}),
            json!({"id": "s1", "type": "subflow"}),
            json!({"id": "g", "type": "group"}),
            json!({"id": "j", "type": "junction"}),
            json!({"id": "a", "type": "subflow:s1"}),
            json!({"id": "b", "type": "subflow:gone"}),
            json!({"id": "c", "type": "http in"}),
            json!({"id": "d", "type": "http in"}),
            json!({"id": "e", "type": "node-red-contrib-x"}),
        ];
        let needed: Vec<String> = types_needed(&flows).into_iter().collect();
        assert_eq!(needed, ["http in", "node-red-contrib-x", "subflow:gone"]);
    }

    #[test]
    fn registered_types_are_read_from_the_html() {
        let html = r#"
            <script type="text/javascript">
                RED.nodes.registerType('lower-case', { category: 'function' });
                RED.nodes.registerType( "upper case",{});
                RED.nodes.registerType(`tpl`, {});
                RED.nodes.registerType(name, {});
            </script>
            <script type="text/html" data-template-name="lower-case"></script>"#;
        let types: Vec<String> = types_registered_in_html(html).into_iter().collect();
        assert_eq!(types, ["lower-case", "tpl", "upper case"]);
        assert!(types_registered_in_html("registerType(").is_empty());
        assert!(types_registered_in_html("registerType('unterminated").is_empty());
    }
}
