//! Installed packages as SBOM components and dependency edges: one component per
//! name@version (its purl is its bom-ref), however many places it is installed in, with the
//! union of its edges and hashes.

use super::hash::{self, Hash};
use super::purl;
use super::tree::Tree;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub purl: String,
    /// The full npm name, `name` or `@scope/name`.
    pub name: String,
    pub version: String,
    pub licenses: Option<Value>,
    pub hashes: BTreeSet<Hash>,
    /// Purls of the components this one requires.
    pub depends_on: BTreeSet<String>,
}

/// The components of one SBOM, by purl, and what was odd on the way.
#[derive(Debug, Default)]
pub struct Graph {
    pub components: BTreeMap<String, Component>,
    /// Dependencies that are declared but not installed.
    pub warnings: Vec<String>,
}

impl Graph {
    /// Adds every package of `tree` reachable from `start` (the locations themselves included),
    /// with an edge for each dependency that Node's resolution finds. `place` names the tree
    /// in warnings.
    pub fn add_reachable<'a>(&mut self, tree: &'a Tree, start: impl IntoIterator<Item = &'a str>, place: &str) {
        for location in tree.closure(start) {
            let package = &tree.packages[location];
            let id = purl::npm(&package.name, &package.version);
            let mut depends_on = BTreeSet::new();
            for (name, required) in package.wants() {
                match tree.resolve(location, name) {
                    Some(target) => {
                        let t = &tree.packages[target];
                        depends_on.insert(purl::npm(&t.name, &t.version));
                    }
                    None if required => self.warnings.push(format!(
                        "{}@{} ({place}/{location}) depends on {name}, which is not installed",
                        package.name, package.version
                    )),
                    None => {}
                }
            }
            let hashes: BTreeSet<Hash> =
                package.integrity.as_deref().map(hash::from_integrity).unwrap_or_default().into_iter().collect();
            let component = self.components.entry(id.clone()).or_insert_with(|| Component {
                purl: id,
                name: package.name.clone(),
                version: package.version.clone(),
                licenses: None,
                hashes: BTreeSet::new(),
                depends_on: BTreeSet::new(),
            });
            if component.licenses.is_none() {
                component.licenses = package.licenses.clone();
            }
            component.hashes.extend(hashes);
            component.depends_on.extend(depends_on);
        }
    }

    /// The purl of the package at `location` of `tree`.
    pub fn purl_of(tree: &Tree, location: &str) -> Option<String> {
        tree.get(location).map(|p| purl::npm(&p.name, &p.version))
    }

    /// Adds an edge between two components that are both in the graph.
    pub fn add_edge(&mut self, from: &str, to: &str) {
        if self.components.contains_key(to)
            && let Some(component) = self.components.get_mut(from)
        {
            component.depends_on.insert(to.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::tree::Package;
    use serde_json::json;

    fn pkg(name: &str, version: &str, deps: &[&str], integrity: Option<&str>) -> Package {
        let deps: serde_json::Map<String, Value> = deps.iter().map(|d| (d.to_string(), json!("*"))).collect();
        let mut p = Package::from_manifest(
            name,
            &json!({"name": name, "version": version, "license": "MIT", "dependencies": deps}),
        )
        .unwrap();
        p.integrity = integrity.map(str::to_string);
        p
    }

    const SHA1_ABC: &str = "sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=";

    #[test]
    fn same_name_and_version_in_two_places_is_one_component_with_both_edges() {
        let mut t = Tree::default();
        t.insert("node_modules/root", pkg("root", "1.0.0", &["a", "b"], None));
        t.insert("node_modules/a", pkg("a", "1.0.0", &["dup"], None));
        t.insert("node_modules/a/node_modules/dup", pkg("dup", "2.0.0", &["x"], None));
        t.insert("node_modules/a/node_modules/x", pkg("x", "1.0.0", &[], None));
        t.insert("node_modules/b", pkg("b", "1.0.0", &["dup"], None));
        t.insert("node_modules/b/node_modules/dup", pkg("dup", "2.0.0", &["y"], Some(SHA1_ABC)));
        t.insert("node_modules/b/node_modules/y", pkg("y", "1.0.0", &[], None));
        let mut g = Graph::default();
        g.add_reachable(&t, ["node_modules/root"], "/r");
        let dup = &g.components["pkg:npm/dup@2.0.0"];
        assert_eq!(dup.depends_on, BTreeSet::from(["pkg:npm/x@1.0.0".to_string(), "pkg:npm/y@1.0.0".to_string()]));
        assert_eq!(dup.hashes.len(), 1, "the hash from the place that has one");
        assert_eq!(g.components.len(), 6);
        assert_eq!(g.components["pkg:npm/root@1.0.0"].depends_on.len(), 2);
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    }

    #[test]
    fn edges_point_at_what_resolution_finds() {
        let mut t = Tree::default();
        t.insert("node_modules/express", pkg("express", "4.22.2", &["qs"], None));
        t.insert("node_modules/express/node_modules/qs", pkg("qs", "6.14.0", &[], None));
        t.insert("node_modules/qs", pkg("qs", "6.15.0", &[], None));
        let mut g = Graph::default();
        g.add_reachable(&t, ["node_modules/express"], "/r");
        assert_eq!(
            g.components["pkg:npm/express@4.22.2"].depends_on,
            BTreeSet::from(["pkg:npm/qs@6.14.0".to_string()])
        );
        assert!(!g.components.contains_key("pkg:npm/qs@6.15.0"), "not reachable from express");
    }

    #[test]
    fn missing_required_dependencies_are_warned_about_and_missing_optional_ones_are_not() {
        let mut t = Tree::default();
        let mut p = pkg("a", "1.0.0", &["gone"], None);
        p.optional.insert("fsevents".into());
        t.insert("node_modules/a", p);
        let mut g = Graph::default();
        g.add_reachable(&t, ["node_modules/a"], "/srv/nr");
        assert_eq!(g.warnings, ["a@1.0.0 (/srv/nr/node_modules/a) depends on gone, which is not installed"]);
        assert!(g.components["pkg:npm/a@1.0.0"].depends_on.is_empty());
    }

    #[test]
    fn installed_optional_dependencies_are_edges() {
        let mut t = Tree::default();
        let mut p = pkg("a", "1.0.0", &[], None);
        p.optional.insert("opt".into());
        t.insert("node_modules/a", p);
        t.insert("node_modules/opt", pkg("opt", "1.0.0", &[], None));
        let mut g = Graph::default();
        g.add_reachable(&t, ["node_modules/a"], "/r");
        assert!(g.components["pkg:npm/a@1.0.0"].depends_on.contains("pkg:npm/opt@1.0.0"));
    }

    #[test]
    fn add_edge_only_between_components() {
        let mut t = Tree::default();
        t.insert("node_modules/a", pkg("a", "1.0.0", &[], None));
        let mut g = Graph::default();
        g.add_reachable(&t, ["node_modules/a"], "/r");
        g.add_edge("pkg:npm/a@1.0.0", "pkg:npm/nope@1.0.0");
        assert!(g.components["pkg:npm/a@1.0.0"].depends_on.is_empty());
        assert_eq!(Graph::purl_of(&t, "node_modules/a").as_deref(), Some("pkg:npm/a@1.0.0"));
    }
}
