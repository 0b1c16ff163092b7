//! The CycloneDX 1.5 JSON document, from the component graph and the facts around it.

use super::graph::{Component, Graph};
use super::purl;
use serde_json::{Value, json};

/// Everything the document says besides the npm components.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The purl of the Node-RED component (the `application`; every other npm package is a
    /// `library`).
    pub node_red: &'a str,
    /// Node.js's version, `20.20.2`.
    pub node_version: &'a str,
    pub serial: uuid::Uuid,
    /// RFC 3339.
    pub timestamp: &'a str,
    /// `metadata.properties`, name and value.
    pub properties: Vec<(&'static str, String)>,
}

/// The purl (and bom-ref) of redtether itself, the SBOM's subject.
pub fn redtether_ref() -> String {
    purl::generic("redtether", crate::VERSION)
}

/// The purl (and bom-ref) of the Node.js runtime.
pub fn node_ref(version: &str) -> String {
    purl::generic("node", version)
}

pub fn document(graph: &Graph, facts: &Facts) -> Value {
    let root = redtether_ref();
    let node = node_ref(facts.node_version);

    let mut components = vec![json!({
        "type": "platform",
        "bom-ref": node,
        "name": "node",
        "version": facts.node_version,
        "description": "Node.js, the runtime Node-RED runs on",
        "purl": node,
    })];
    components.extend(graph.components.values().map(|c| component(c, c.purl == facts.node_red)));

    let mut dependencies =
        vec![json!({ "ref": root, "dependsOn": [facts.node_red, node] }), json!({ "ref": node, "dependsOn": [] })];
    dependencies.extend(graph.components.values().map(|c| json!({ "ref": c.purl, "dependsOn": c.depends_on })));

    let properties: Vec<Value> =
        facts.properties.iter().map(|(name, value)| json!({ "name": name, "value": value })).collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", facts.serial),
        "version": 1,
        "metadata": {
            "timestamp": facts.timestamp,
            "tools": {
                "components": [{ "type": "application", "name": "redtether", "version": crate::VERSION }],
            },
            "component": {
                "type": "application",
                "bom-ref": root,
                "name": "redtether",
                "version": crate::VERSION,
                "description": "Device agent that supervises Node-RED",
                "purl": root,
            },
            "properties": properties,
        },
        "components": components,
        "dependencies": dependencies,
    })
}

fn component(c: &Component, application: bool) -> Value {
    let (group, name) = purl::split_scope(&c.name);
    let mut out = json!({
        "type": if application { "application" } else { "library" },
        "bom-ref": c.purl,
        "name": name,
        "version": c.version,
        "purl": c.purl,
    });
    if let Some(group) = group {
        out["group"] = json!(group);
    }
    if let Some(licenses) = &c.licenses {
        out["licenses"] = licenses.clone();
    }
    if !c.hashes.is_empty() {
        out["hashes"] = c.hashes.iter().map(|h| h.to_json()).collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::hash::Hash;
    use std::collections::BTreeSet;

    fn graph() -> Graph {
        let mut g = Graph::default();
        for (name, version, deps) in [
            ("node-red", "4.1.15", vec!["pkg:npm/%40node-red/runtime@4.1.15"]),
            ("@node-red/runtime", "4.1.15", vec![]),
        ] {
            let purl = purl::npm(name, version);
            g.components.insert(
                purl.clone(),
                Component {
                    purl,
                    name: name.into(),
                    version: version.into(),
                    licenses: Some(json!([{"license": {"id": "Apache-2.0"}}])),
                    hashes: BTreeSet::from([Hash { alg: "SHA-1", content: "ab".repeat(20) }]),
                    depends_on: deps.into_iter().map(str::to_string).collect(),
                },
            );
        }
        g
    }

    fn doc() -> Value {
        let facts = Facts {
            node_red: "pkg:npm/node-red@4.1.15",
            node_version: "20.20.2",
            serial: uuid::Uuid::nil(),
            timestamp: "2026-11-27T07:00:00Z",
            properties: vec![("redtether:node-red:root", "/srv/nr".into())],
        };
        document(&graph(), &facts)
    }

    #[test]
    fn header_and_metadata() {
        let d = doc();
        assert_eq!(d["bomFormat"], "CycloneDX");
        assert_eq!(d["specVersion"], "1.5");
        assert_eq!(d["version"], 1);
        assert_eq!(d["serialNumber"], "urn:uuid:00000000-0000-0000-0000-000000000000");
        assert_eq!(d["metadata"]["timestamp"], "2026-11-27T07:00:00Z");
        assert_eq!(d["metadata"]["component"]["name"], "redtether");
        assert_eq!(d["metadata"]["component"]["version"], crate::VERSION);
        assert_eq!(d["metadata"]["component"]["bom-ref"], redtether_ref());
        assert_eq!(d["metadata"]["tools"]["components"][0]["name"], "redtether");
        assert_eq!(d["metadata"]["properties"], json!([{"name": "redtether:node-red:root", "value": "/srv/nr"}]));
    }

    #[test]
    fn components_node_red_scoped_and_runtime() {
        let d = doc();
        let components = d["components"].as_array().unwrap();
        assert_eq!(components.len(), 3);
        let node = &components[0];
        assert_eq!(
            (node["type"].as_str(), node["name"].as_str(), node["version"].as_str(), node["purl"].as_str()),
            (Some("platform"), Some("node"), Some("20.20.2"), Some("pkg:generic/node@20.20.2"))
        );
        let by_ref = |r: &str| components.iter().find(|c| c["bom-ref"] == r).unwrap();
        let nr = by_ref("pkg:npm/node-red@4.1.15");
        assert_eq!(nr["type"], "application");
        assert!(nr.get("group").is_none());
        assert_eq!(nr["hashes"], json!([{"alg": "SHA-1", "content": "ab".repeat(20)}]));
        let runtime = by_ref("pkg:npm/%40node-red/runtime@4.1.15");
        assert_eq!((runtime["group"].as_str(), runtime["name"].as_str()), (Some("@node-red"), Some("runtime")));
        assert_eq!(runtime["type"], "library");
        assert_eq!(runtime["licenses"], json!([{"license": {"id": "Apache-2.0"}}]));
    }

    #[test]
    fn dependencies_from_the_root_down_and_every_ref_is_a_component() {
        let d = doc();
        let deps = d["dependencies"].as_array().unwrap();
        assert_eq!(
            deps[0],
            json!({"ref": redtether_ref(), "dependsOn": ["pkg:npm/node-red@4.1.15", "pkg:generic/node@20.20.2"]})
        );
        let nr = deps.iter().find(|e| e["ref"] == "pkg:npm/node-red@4.1.15").unwrap();
        assert_eq!(nr["dependsOn"], json!(["pkg:npm/%40node-red/runtime@4.1.15"]));
        let mut known: BTreeSet<&str> =
            d["components"].as_array().unwrap().iter().map(|c| c["bom-ref"].as_str().unwrap()).collect();
        known.insert(d["metadata"]["component"]["bom-ref"].as_str().unwrap());
        for edge in deps {
            assert!(known.contains(edge["ref"].as_str().unwrap()), "{edge}");
            for to in edge["dependsOn"].as_array().unwrap() {
                assert!(known.contains(to.as_str().unwrap()), "{to}");
            }
        }
        assert_eq!(deps.len(), 4, "one entry per component and the root");
    }
}
