//! Prometheus's own checker for the metrics endpoints: `promtool check metrics` (Debian's
//! `prometheus` package, installed with apt-get when missing, its server kept from running),
//! which parses the exposition with Prometheus's parser and lints it. Once text passes it, the
//! tests read sample values with [`value`].

use std::io::Write;
use std::process::{Command, Stdio};

const PROMTOOL: &str = "/usr/bin/promtool";

/// Runs `promtool check metrics` on `text`; `Err` is what it said.
pub fn check(text: &str) -> Result<(), String> {
    install();
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(()) } else { Err(said) }
}

/// The value of the sample `name` whose labels include every pair of `labels` (the first such
/// sample), from exposition text that passed [`check`].
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, number) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let all = labels.iter().all(|(k, v)| label_text.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        if !all {
            return None;
        }
        number.parse().ok()
    })
}

/// The sum of every sample `name` has (over all label sets).
pub fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            let metric = series.split_once('{').map_or(series, |(m, _)| m);
            (metric == name).then(|| number.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Installs Debian's `prometheus` package if promtool is missing (its server kept from running).
fn install() {
    crate::apt::ensure(&crate::apt::Need {
        lock: "prometheus.lock",
        programs: &[PROMTOOL],
        packages: &["prometheus"],
        unwanted_service: Some("prometheus"),
        for_what: "the metrics tests (promtool)",
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_name_and_labels() {
        let text = "# TYPE a_total counter\na_total{x=\"1\",y=\"2\"} 3\na_total{x=\"2\"} 4\nb 5.5\n";
        assert_eq!(value(text, "a_total", &[("x", "1")]), Some(3.0));
        assert_eq!(value(text, "a_total", &[("x", "2")]), Some(4.0));
        assert_eq!(value(text, "a_total", &[("x", "3")]), None);
        assert_eq!(value(text, "b", &[]), Some(5.5));
        assert_eq!(sum(text, "a_total"), 7.0);
    }
}
