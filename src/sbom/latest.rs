//! `redtether sbom --latest`: what the npm registry says is the newest version of each npm
//! package in the SBOM, cached in the state directory, and how it is written into the document.
//!
//! Everything here is pure (no clock, no files, no network): the registry's URL and a package's
//! URL in it, reading the abbreviated metadata document, the cache and which of its entries are
//! fresh enough to be used without asking, and the annotation of the document. The lookups
//! themselves are in `registry`, and [`super::add_latest`] ties the two together.
//!
//! Each npm component gets the properties `redtether:npm:latest` (the registry's
//! `dist-tags.latest`; absent when the registry does not know the package or nobody could ask
//! it), `redtether:npm:latest_checked` (when the registry said so, RFC 3339) and, for a cached
//! answer older than [`FRESH_FOR`] that was used because the registry could not be asked,
//! `redtether:npm:latest_stale` = `true`. `metadata.properties` says where the answers came
//! from: `redtether:npm:latest_source` ([`Source`]), `redtether:npm:latest_registry`,
//! `redtether:npm:latest_cache_age` (the age of the oldest cached answer used) and
//! `redtether:npm:latest_error` (why the registry could not answer).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Why a registry's answer or the cache file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LatestError {
    /// The registry's answer is no metadata document (an HTML page from a captive portal, say).
    #[error("the answer is not a package document: {0}")]
    NotADocument(#[source] serde_json::Error),
    /// The cache file holds something else.
    #[error("{0}")]
    NoCache(#[source] serde_json::Error),
}

/// The cache, in the state directory.
pub const CACHE_FILE: &str = "sbom-latest.json";
/// How long a cached answer is used without asking the registry again.
pub const FRESH_FOR: Duration = Duration::from_secs(24 * 60 * 60);
/// npm's own default registry.
pub const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org";
/// What npm asks for: the abbreviated ("corgi") document, or the full one from a registry that
/// has no abbreviated form; both have `dist-tags`.
pub const ACCEPT: &str = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";

pub const PROP_LATEST: &str = "redtether:npm:latest";
pub const PROP_CHECKED: &str = "redtether:npm:latest_checked";
pub const PROP_STALE: &str = "redtether:npm:latest_stale";
pub const PROP_SOURCE: &str = "redtether:npm:latest_source";
pub const PROP_REGISTRY: &str = "redtether:npm:latest_registry";
pub const PROP_CACHE_AGE: &str = "redtether:npm:latest_cache_age";
pub const PROP_ERROR: &str = "redtether:npm:latest_error";

/// The registry npm itself would use as far as the environment says: `npm_config_registry`,
/// else `NPM_CONFIG_REGISTRY` (an empty value counts as unset, as npm has it), else npm's
/// default; without trailing slashes. (`.npmrc` files are not read.)
pub fn registry_from(lower: Option<&str>, upper: Option<&str>) -> String {
    let chosen = [lower, upper].into_iter().flatten().map(str::trim).find(|v| !v.is_empty());
    let registry = chosen.unwrap_or(DEFAULT_REGISTRY).trim_end_matches('/');
    if registry.is_empty() { DEFAULT_REGISTRY.to_string() } else { registry.to_string() }
}

/// The URL of `name`'s metadata document: the registry (with any path it has, trailing slashes
/// or not) and the name as npm escapes it, `@scope%2fname` for a scoped one. Bytes a URL path
/// cannot hold as they are (npm refuses such names for new packages, but a package.json on disk
/// may have anything) are percent-encoded.
pub fn package_url(registry: &str, name: &str) -> String {
    let mut url = registry.trim_end_matches('/').to_string();
    url.push('/');
    for byte in name.bytes() {
        match byte {
            b'/' => url.push_str("%2f"),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => url.push(byte as char),
            _ => url.push_str(&format!("%{byte:02X}")),
        }
    }
    url
}

/// `dist-tags.latest` of a registry's metadata document (abbreviated or full): `Ok(None)` when
/// it has none (or one that is no version string), `Err` when the body is not such a document
/// at all (an HTML page from a captive portal, say).
pub fn latest_of(body: &[u8]) -> Result<Option<String>, LatestError> {
    #[derive(Deserialize)]
    struct Document {
        #[serde(rename = "dist-tags", default)]
        dist_tags: BTreeMap<String, Value>,
    }
    let document: Document = serde_json::from_slice(body).map_err(LatestError::NotADocument)?;
    let latest = document.dist_tags.get("latest").and_then(Value::as_str);
    Ok(latest
        .filter(|v| !v.is_empty() && v.len() <= 256 && !v.chars().any(|c| c.is_control() || c.is_whitespace()))
        .map(str::to_string))
}

/// One cached answer: the registry's `dist-tags.latest` (`None`: the registry does not know the
/// package) and when it said so, in seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub latest: Option<String>,
    pub checked: u64,
}

impl Entry {
    /// Young enough to be used without asking. An entry from the future (the clock was set
    /// back) is not.
    pub fn is_fresh(&self, now: u64) -> bool {
        self.checked <= now && now - self.checked < FRESH_FOR.as_secs()
    }
}

/// `<state_dir>/sbom-latest.json`: the answers of one registry, by package name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    pub registry: String,
    pub packages: BTreeMap<String, Entry>,
}

impl Cache {
    /// The cache file's contents as far as they are about `registry`: answers of another
    /// registry are of no use (an empty cache). `Err` when the file is no cache.
    pub fn parse(bytes: &[u8], registry: &str) -> Result<Cache, LatestError> {
        let cache: Cache = serde_json::from_slice(bytes).map_err(LatestError::NoCache)?;
        if cache.registry == registry {
            Ok(cache)
        } else {
            Ok(Cache { registry: registry.to_string(), packages: BTreeMap::new() })
        }
    }

    /// The names the registry must be asked about: those with no entry or only a stale one.
    pub fn to_ask(&self, names: &BTreeSet<String>, now: u64) -> Vec<String> {
        names.iter().filter(|name| !self.packages.get(*name).is_some_and(|e| e.is_fresh(now))).cloned().collect()
    }

    /// The cache to keep after a run: an entry for each of `names` (the packages installed now;
    /// others are dropped), the registry's new answers in place of the old ones.
    pub fn updated(&self, registry: &str, names: &BTreeSet<String>, answers: &Answers, now: u64) -> Cache {
        let packages = names
            .iter()
            .filter_map(|name| {
                let entry = match answers.found.get(name) {
                    Some(latest) => Entry { latest: latest.clone(), checked: now },
                    None => self.packages.get(name)?.clone(),
                };
                Some((name.clone(), entry))
            })
            .collect();
        Cache { registry: registry.to_string(), packages }
    }
}

/// What the lookups in the registry came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    /// The registry's answers, by name (`None`: it does not know the package).
    pub found: BTreeMap<String, Option<String>>,
    /// Why the lookups stopped early: the registry could not be reached or answered wrongly.
    /// The whole error chain as text, as it goes into the document.
    pub failure: Option<String>,
    /// The overall deadline ended the lookups before every name was asked about.
    pub out_of_time: bool,
}

/// Where the document's latest versions came from, `redtether:npm:latest_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The registry answered for every package the cache had no fresh answer for.
    Live,
    /// Every answer was in the cache and fresh: the registry was not asked.
    Cache,
    /// The registry answered for some packages, then failed or ran out of time; the rest are
    /// cached answers (maybe stale) or missing.
    Partial,
    /// The registry could not be asked (or answered nothing in time): cached answers only,
    /// maybe stale.
    Unavailable,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Live => "live",
            Source::Cache => "cache",
            Source::Partial => "partial",
            Source::Unavailable => "unavailable",
        }
    }
}

/// How an answer used in the document was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Registry,
    Cache,
    /// A cached answer older than [`FRESH_FOR`], used because the registry did not answer.
    Stale,
}

/// The answers for the document, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub registry: String,
    /// By name; a name not here has no answer at all.
    pub known: BTreeMap<String, (Entry, Origin)>,
    pub source: Source,
    /// When the oldest cached answer used was checked.
    pub oldest_cached: Option<u64>,
    pub error: Option<String>,
}

impl Resolution {
    pub fn count(&self, origin: Origin) -> usize {
        self.known.values().filter(|(_, o)| *o == origin).count()
    }
}

/// Combines the cache (as it was before this run), the names that were to be asked about and
/// what the registry answered.
pub fn resolve(
    registry: &str,
    names: &BTreeSet<String>,
    cache: &Cache,
    asked: &[String],
    answers: &Answers,
    now: u64,
    deadline: Duration,
) -> Resolution {
    let mut known = BTreeMap::new();
    for name in names {
        let found =
            answers.found.get(name).map(|latest| (Entry { latest: latest.clone(), checked: now }, Origin::Registry));
        let cached = cache.packages.get(name).map(|entry| {
            let origin = if entry.is_fresh(now) { Origin::Cache } else { Origin::Stale };
            (entry.clone(), origin)
        });
        if let Some(answer) = found.or(cached) {
            known.insert(name.clone(), answer);
        }
    }
    let stopped = answers.failure.is_some() || answers.out_of_time;
    let source = if asked.is_empty() {
        Source::Cache
    } else if !stopped {
        Source::Live
    } else if answers.found.is_empty() {
        Source::Unavailable
    } else {
        Source::Partial
    };
    let error = answers.failure.clone().or_else(|| {
        answers.out_of_time.then(|| {
            format!(
                "no answer for {} of {} packages within {}",
                asked.len() - answers.found.len(),
                asked.len(),
                humantime::format_duration(deadline)
            )
        })
    });
    let oldest_cached =
        known.values().filter(|(_, origin)| *origin != Origin::Registry).map(|(entry, _)| entry.checked).min();
    Resolution { registry: registry.to_string(), known, source, oldest_cached, error }
}

/// The name of an npm component (`@scope/name` from its group and name), or `None` for the
/// other components.
pub fn npm_name(component: &Value) -> Option<String> {
    if !component["purl"].as_str()?.starts_with("pkg:npm/") {
        return None;
    }
    let name = component["name"].as_str()?;
    Some(match component["group"].as_str() {
        Some(group) if !group.is_empty() => format!("{group}/{name}"),
        _ => name.to_string(),
    })
}

/// The names of the document's npm components.
pub fn npm_names(doc: &Value) -> BTreeSet<String> {
    doc["components"].as_array().map(|cs| cs.iter().filter_map(npm_name).collect()).unwrap_or_default()
}

/// Writes the answers into the document: properties on each npm component with an answer, and
/// where they came from in `metadata.properties`.
pub fn annotate(doc: &mut Value, resolution: &Resolution, now: u64) {
    if let Some(components) = doc["components"].as_array_mut() {
        for component in components {
            let Some((entry, origin)) = npm_name(component).and_then(|name| resolution.known.get(&name)) else {
                continue;
            };
            let mut properties = Vec::new();
            if let Some(latest) = &entry.latest {
                properties.push(property(PROP_LATEST, latest));
            }
            properties.push(property(PROP_CHECKED, &rfc3339(entry.checked)));
            if *origin == Origin::Stale {
                properties.push(property(PROP_STALE, "true"));
            }
            push_properties(component, properties);
        }
    }
    let mut properties =
        vec![property(PROP_SOURCE, resolution.source.as_str()), property(PROP_REGISTRY, &resolution.registry)];
    if let Some(oldest) = resolution.oldest_cached {
        let age = Duration::from_secs(now.saturating_sub(oldest));
        properties.push(property(PROP_CACHE_AGE, &humantime::format_duration(age).to_string()));
    }
    if let Some(error) = &resolution.error {
        properties.push(property(PROP_ERROR, error));
    }
    push_properties(&mut doc["metadata"], properties);
}

fn property(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

fn push_properties(object: &mut Value, properties: Vec<Value>) {
    if !object["properties"].is_array() {
        object["properties"] = json!([]);
    }
    if let Some(list) = object["properties"].as_array_mut() {
        list.extend(properties);
    }
}

fn rfc3339(secs: u64) -> String {
    redtether_proto::time::format_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_762_800; // 2026-11-27T07:00:00Z
    const DAY: u64 = 24 * 60 * 60;
    const REG: &str = "https://registry.example";

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn entry(latest: Option<&str>, checked: u64) -> Entry {
        Entry { latest: latest.map(str::to_string), checked }
    }

    fn cache(entries: &[(&str, Entry)]) -> Cache {
        Cache { registry: REG.to_string(), packages: entries.iter().map(|(n, e)| (n.to_string(), e.clone())).collect() }
    }

    fn answers(found: &[(&str, Option<&str>)], failure: Option<&str>, out_of_time: bool) -> Answers {
        Answers {
            found: found.iter().map(|(n, v)| (n.to_string(), v.map(str::to_string))).collect(),
            failure: failure.map(str::to_string),
            out_of_time,
        }
    }

    #[test]
    fn registry_from_the_environment_as_npm_reads_it() {
        assert_eq!(registry_from(None, None), "https://registry.npmjs.org");
        assert_eq!(registry_from(Some("http://127.0.0.1:4873/"), None), "http://127.0.0.1:4873");
        assert_eq!(registry_from(None, Some("https://npm.example/repo/npm//")), "https://npm.example/repo/npm");
        assert_eq!(registry_from(Some("http://lower"), Some("http://upper")), "http://lower");
        assert_eq!(registry_from(Some(""), Some("http://upper")), "http://upper", "empty counts as unset");
        assert_eq!(registry_from(Some(" "), Some("")), DEFAULT_REGISTRY);
        assert_eq!(registry_from(Some("/"), None), DEFAULT_REGISTRY);
    }

    #[test]
    fn package_urls_escape_the_scope_slash_as_npm_does() {
        assert_eq!(package_url(DEFAULT_REGISTRY, "node-red"), "https://registry.npmjs.org/node-red");
        assert_eq!(
            package_url("https://registry.npmjs.org/", "@node-red/runtime"),
            "https://registry.npmjs.org/@node-red%2fruntime"
        );
        assert_eq!(package_url("http://127.0.0.1:9/npm/", "@a/b.c_d~e"), "http://127.0.0.1:9/npm/@a%2fb.c_d~e");
        assert_eq!(package_url("http://r", "Odd Name#?%"), "http://r/Odd%20Name%23%3F%25");
        assert_eq!(package_url("http://r", "ünï"), "http://r/%C3%BCn%C3%AF");
    }

    #[test]
    fn latest_from_an_abbreviated_or_full_document() {
        let abbreviated = br#"{"name":"node-red","dist-tags":{"latest":"4.1.2","next":"5.0.0-beta.1"},
            "versions":{"4.1.2":{"name":"node-red","version":"4.1.2"}},"modified":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(latest_of(abbreviated).unwrap(), Some("4.1.2".to_string()));
        assert_eq!(latest_of(br#"{"name":"x","versions":{}}"#).unwrap(), None, "no dist-tags");
        assert_eq!(latest_of(br#"{"dist-tags":{"next":"1.0.0"}}"#).unwrap(), None, "no latest tag");
        assert_eq!(latest_of(br#"{"dist-tags":{"latest":7}}"#).unwrap(), None, "not a string");
        assert_eq!(latest_of(br#"{"dist-tags":{"latest":"1.0.0\n<script>"}}"#).unwrap(), None);
        assert!(latest_of(b"<html>Sign in to the Wi-Fi</html>").is_err());
        assert!(latest_of(b"[1, 2]").is_err());
    }

    #[test]
    fn entries_younger_than_a_day_are_fresh() {
        assert!(entry(Some("1"), NOW).is_fresh(NOW));
        assert!(entry(Some("1"), NOW - DAY + 1).is_fresh(NOW));
        assert!(!entry(Some("1"), NOW - DAY).is_fresh(NOW));
        assert!(!entry(Some("1"), NOW + 60).is_fresh(NOW), "from the future: the clock went back");
    }

    #[test]
    fn only_missing_and_stale_names_are_asked_about() {
        let c = cache(&[
            ("fresh", entry(Some("1.0.0"), NOW - 3600)),
            ("unknown-to-npm", entry(None, NOW - 3600)),
            ("stale", entry(Some("1.0.0"), NOW - 2 * DAY)),
            ("gone", entry(Some("1.0.0"), NOW)),
        ]);
        let wanted = names(&["fresh", "unknown-to-npm", "stale", "new"]);
        assert_eq!(c.to_ask(&wanted, NOW), vec!["new".to_string(), "stale".to_string()]);
        assert!(c.to_ask(&names(&["fresh"]), NOW).is_empty());
    }

    #[test]
    fn a_cache_of_another_registry_or_garbage_is_not_used() {
        let c = cache(&[("a", entry(Some("1.0.0"), NOW))]);
        let text = serde_json::to_vec(&c).unwrap();
        assert_eq!(Cache::parse(&text, REG).unwrap(), c.clone());
        let other = Cache::parse(&text, "http://other").unwrap();
        assert!(other.packages.is_empty());
        assert_eq!(other.registry, "http://other");
        assert!(Cache::parse(b"{\"packages\": 3}", REG).is_err());
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"registry": REG, "packages": {"a": {"latest": "1.0.0", "checked": NOW}}})
        );
    }

    #[test]
    fn the_updated_cache_has_the_new_answers_and_only_installed_packages() {
        let c = cache(&[
            ("kept", entry(Some("1.0.0"), NOW - 2 * DAY)),
            ("renewed", entry(Some("1.0.0"), NOW - 2 * DAY)),
            ("uninstalled", entry(Some("1.0.0"), NOW)),
        ]);
        let a = answers(&[("renewed", Some("2.0.0")), ("new", None)], None, false);
        let updated = c.updated(REG, &names(&["kept", "renewed", "new", "never-answered"]), &a, NOW);
        assert_eq!(
            updated,
            cache(&[
                ("kept", entry(Some("1.0.0"), NOW - 2 * DAY)),
                ("renewed", entry(Some("2.0.0"), NOW)),
                ("new", entry(None, NOW)),
            ])
        );
    }

    #[test]
    fn resolution_prefers_new_answers_then_the_cache_and_marks_stale_ones() {
        let c = cache(&[
            ("cached", entry(Some("1.0.0"), NOW - 3600)),
            ("stale", entry(Some("0.9.0"), NOW - 3 * DAY)),
            ("asked", entry(Some("0.1.0"), NOW - 3 * DAY)),
        ]);
        let wanted = names(&["cached", "stale", "asked", "nowhere"]);
        let asked = c.to_ask(&wanted, NOW);
        let a = answers(&[("asked", Some("2.0.0"))], Some("connection refused"), false);
        let r = resolve(REG, &wanted, &c, &asked, &a, NOW, Duration::from_secs(20));
        assert_eq!(r.known["asked"], (entry(Some("2.0.0"), NOW), Origin::Registry));
        assert_eq!(r.known["cached"], (entry(Some("1.0.0"), NOW - 3600), Origin::Cache));
        assert_eq!(r.known["stale"], (entry(Some("0.9.0"), NOW - 3 * DAY), Origin::Stale));
        assert!(!r.known.contains_key("nowhere"));
        assert_eq!((r.source, r.error.as_deref()), (Source::Partial, Some("connection refused")));
        assert_eq!(r.oldest_cached, Some(NOW - 3 * DAY));
        assert_eq!((r.count(Origin::Registry), r.count(Origin::Cache), r.count(Origin::Stale)), (1, 1, 1));
    }

    #[test]
    fn the_source_says_live_cache_partial_or_unavailable() {
        let c = cache(&[("a", entry(Some("1.0.0"), NOW - 3600)), ("b", entry(Some("1.0.0"), NOW - 3 * DAY))]);
        let d = Duration::from_secs(20);
        let all = names(&["a", "b"]);
        let source = |wanted: &BTreeSet<String>, a: &Answers| {
            let asked = c.to_ask(wanted, NOW);
            resolve(REG, wanted, &c, &asked, a, NOW, d)
        };
        let r = source(&names(&["a"]), &Answers::default());
        assert_eq!((r.source, r.error), (Source::Cache, None));
        assert_eq!(source(&all, &answers(&[("b", Some("2.0.0"))], None, false)).source, Source::Live);
        let r = source(&all, &answers(&[], Some("refused"), false));
        assert_eq!((r.source, r.known["b"].1), (Source::Unavailable, Origin::Stale));
        let r = source(&all, &answers(&[], None, true));
        assert_eq!(
            (r.source, r.error.as_deref()),
            (Source::Unavailable, Some("no answer for 1 of 1 packages within 20s"))
        );
        let r = source(&names(&["a", "b", "c"]), &answers(&[("b", None)], None, true));
        assert_eq!((r.source, r.error.as_deref()), (Source::Partial, Some("no answer for 1 of 2 packages within 20s")));
    }

    #[test]
    fn npm_names_come_from_group_and_name_of_npm_components_only() {
        let doc = json!({"components": [
            {"purl": "pkg:generic/node@20.0.0", "name": "node"},
            {"purl": "pkg:npm/express@4.0.0", "name": "express"},
            {"purl": "pkg:npm/%40node-red/runtime@4.1.0", "group": "@node-red", "name": "runtime"},
            {"purl": "pkg:npm/express@5.0.0", "name": "express"},
        ]});
        assert_eq!(npm_names(&doc), names(&["@node-red/runtime", "express"]));
        assert!(npm_names(&json!({})).is_empty());
    }

    #[test]
    fn annotation_adds_component_and_metadata_properties() {
        let mut doc = json!({
            "metadata": {"properties": [{"name": "redtether:node:program", "value": "node"}]},
            "components": [
                {"purl": "pkg:generic/node@20.0.0", "name": "node"},
                {"purl": "pkg:npm/express@4.0.0", "name": "express"},
                {"purl": "pkg:npm/express@5.0.0", "name": "express", "properties": [{"name": "x", "value": "y"}]},
                {"purl": "pkg:npm/%40node-red/runtime@4.1.0", "group": "@node-red", "name": "runtime"},
                {"purl": "pkg:npm/local-only@1.0.0", "name": "local-only"},
                {"purl": "pkg:npm/nobody-knows@1.0.0", "name": "nobody-knows"},
            ],
        });
        let resolution = Resolution {
            registry: REG.to_string(),
            known: BTreeMap::from([
                ("express".to_string(), (entry(Some("5.1.0"), NOW), Origin::Registry)),
                ("@node-red/runtime".to_string(), (entry(Some("4.1.2"), NOW - 3 * DAY), Origin::Stale)),
                ("local-only".to_string(), (entry(None, NOW - 3600), Origin::Cache)),
            ]),
            source: Source::Unavailable,
            oldest_cached: Some(NOW - 3 * DAY - 90),
            error: Some("connection refused".to_string()),
        };
        annotate(&mut doc, &resolution, NOW);
        let c = &doc["components"];
        assert!(c[0].get("properties").is_none(), "Node.js is no npm package");
        let express = json!([
            {"name": "redtether:npm:latest", "value": "5.1.0"},
            {"name": "redtether:npm:latest_checked", "value": "2026-11-27T07:00:00Z"},
        ]);
        assert_eq!(c[1]["properties"], express);
        assert_eq!(c[2]["properties"][0], json!({"name": "x", "value": "y"}), "existing properties stay");
        assert_eq!(c[2]["properties"].as_array().unwrap()[1..], express.as_array().unwrap()[..]);
        assert_eq!(
            c[3]["properties"],
            json!([
                {"name": "redtether:npm:latest", "value": "4.1.2"},
                {"name": "redtether:npm:latest_checked", "value": "2026-11-24T07:00:00Z"},
                {"name": "redtether:npm:latest_stale", "value": "true"},
            ])
        );
        assert_eq!(
            c[4]["properties"],
            json!([{"name": "redtether:npm:latest_checked", "value": "2026-11-27T06:00:00Z"}]),
            "checked, and the registry has no such package"
        );
        assert!(c[5].get("properties").is_none(), "no answer, no properties");
        assert_eq!(
            doc["metadata"]["properties"],
            json!([
                {"name": "redtether:node:program", "value": "node"},
                {"name": "redtether:npm:latest_source", "value": "unavailable"},
                {"name": "redtether:npm:latest_registry", "value": REG},
                {"name": "redtether:npm:latest_cache_age", "value": "3days 1m 30s"},
                {"name": "redtether:npm:latest_error", "value": "connection refused"},
            ])
        );
    }

    #[test]
    fn a_live_annotation_has_no_cache_age_or_error() {
        let mut doc = json!({"metadata": {}, "components": []});
        let resolution = Resolution {
            registry: REG.to_string(),
            known: BTreeMap::new(),
            source: Source::Live,
            oldest_cached: None,
            error: None,
        };
        annotate(&mut doc, &resolution, NOW);
        assert_eq!(
            doc["metadata"]["properties"],
            json!([
                {"name": "redtether:npm:latest_source", "value": "live"},
                {"name": "redtether:npm:latest_registry", "value": REG},
            ])
        );
    }
}
