//! Reading a device's CycloneDX SBOM for people: its packages with installed and latest
//! version (the agent writes the registry's `dist-tags.latest` as the component property
//! `redtether:npm:latest`), which are outdated, and their licenses. Pure.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub latest: Option<String>,
    pub licenses: Vec<String>,
}

impl Package {
    /// Whether the registry knows a newer version than the one installed.
    pub fn outdated(&self) -> bool {
        self.latest.as_deref().is_some_and(|latest| newer(latest, &self.version))
    }
}

/// Whether version `a` is newer than `b`, comparing dotted numbers (`1.10.0` > `1.9.3`); a
/// pre-release or unreadable version counts as different-and-newer only when it differs.
fn newer(a: &str, b: &str) -> bool {
    let numbers =
        |v: &str| -> Option<Vec<u64>> { v.split(['-', '+']).next()?.split('.').map(|p| p.parse().ok()).collect() };
    match (numbers(a), numbers(b)) {
        (Some(a), Some(b)) => a > b,
        _ => a != b,
    }
}

/// The SBOM's components, in its order.
pub fn packages(sbom: &Value) -> Vec<Package> {
    let Some(components) = sbom["components"].as_array() else { return Vec::new() };
    components
        .iter()
        .map(|c| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let latest = c["properties"].as_array().and_then(|props| {
                props.iter().find(|p| p["name"] == "redtether:npm:latest").map(|p| text(&p["value"]))
            });
            let licenses = c["licenses"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .filter_map(|l| {
                            l["license"]["id"]
                                .as_str()
                                .or(l["license"]["name"].as_str())
                                .or(l["expression"].as_str())
                                .map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            Package { name: text(&c["name"]), version: text(&c["version"]), latest, licenses }
        })
        .collect()
}

/// How many of the SBOM's packages are outdated.
pub fn outdated_count(sbom: &Value) -> u32 {
    packages(sbom).iter().filter(|p| p.outdated()).count().try_into().unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn packages_carry_their_latest_version_and_licenses_and_outdated_ones_are_marked() {
        let sbom = json!({"components": [
            {"name": "node-red", "version": "4.0.9",
             "properties": [{"name": "redtether:npm:latest", "value": "4.1.0"}],
             "licenses": [{"license": {"id": "Apache-2.0"}}]},
            {"name": "left-pad", "version": "1.10.0",
             "properties": [{"name": "redtether:npm:latest", "value": "1.9.3"}],
             "licenses": [{"expression": "MIT OR ISC"}]},
            {"name": "<script>", "version": "1.0.0"}
        ]});
        let p = packages(&sbom);
        assert_eq!(p.len(), 3);
        assert!(p[0].outdated() && !p[1].outdated() && !p[2].outdated());
        assert_eq!(p[0].licenses, ["Apache-2.0"]);
        assert_eq!(p[1].licenses, ["MIT OR ISC"]);
        assert_eq!(p[2].latest, None);
        assert_eq!(outdated_count(&sbom), 1);
        assert_eq!(outdated_count(&json!({"no": "components"})), 0);
    }

    #[test]
    fn versions_compare_by_number_not_by_text() {
        assert!(newer("1.10.0", "1.9.9"));
        assert!(!newer("1.9.9", "1.10.0"));
        assert!(!newer("2.0.0", "2.0.0"));
        assert!(newer("next", "1.0.0"));
    }
}
