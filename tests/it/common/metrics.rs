//! A typed reader of the daemon's `/metrics` (the Prometheus text exposition format), so tests
//! look series up by name and labels instead of matching rendered text: a label order, a
//! spacing or a float format the encoder changes cannot make an assertion pass or fail.

use std::collections::BTreeMap;
use std::fmt;

use super::http_get;

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    fn has_labels(&self, subset: &[(&str, &str)]) -> bool {
        subset
            .iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|have| have == v))
    }

    fn has_exact_labels(&self, labels: &[(&str, &str)]) -> bool {
        self.labels.len() == labels.len() && self.has_labels(labels)
    }
}

/// Every sample of one scrape. `Display` prints the scrape as received, for failure messages.
pub struct Metrics {
    samples: Vec<Sample>,
    /// Metric family name → type, from the `# TYPE` lines.
    families: BTreeMap<String, String>,
    text: String,
}

impl Metrics {
    /// Scrapes `/metrics` of the daemon on `port`; a daemon that does not answer, or answers
    /// something that does not parse, fails the test.
    pub fn fetch(port: u16) -> Metrics {
        let (status, body) = http_get(port, "/metrics").expect("metrics answer");
        assert_eq!(status, 200, "GET /metrics: {body}");
        Metrics::parse(&body).unwrap_or_else(|e| panic!("unreadable /metrics ({e}):\n{body}"))
    }

    pub fn parse(text: &str) -> Result<Metrics, String> {
        let samples = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
            .map(|(n, line)| parse_sample(line).map_err(|e| format!("line {}: {e}", n + 1)))
            .collect::<Result<_, _>>()?;
        let families = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_once(' '))
            .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
            .collect();
        Ok(Metrics {
            samples,
            families,
            text: text.to_string(),
        })
    }

    /// The names of every metric family (as declared by `# TYPE`: a histogram once, not its
    /// `_bucket`, `_sum` and `_count` series).
    pub fn families(&self) -> impl Iterator<Item = &str> {
        self.families.keys().map(String::as_str)
    }

    /// The value of the series `name` with exactly `labels`, if it is there.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.has_exact_labels(labels))
            .map(|s| s.value)
    }

    /// The value of the series `name` with exactly `labels`; a missing series fails the test.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in /metrics:\n{self}"))
    }

    /// The sum over every series `name` whose labels include `subset` (a histogram's buckets of
    /// one `op`, a counter over every `kind`); no such series fails the test.
    pub fn sum(&self, name: &str, subset: &[(&str, &str)]) -> f64 {
        let mut matching = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.has_labels(subset))
            .peekable();
        assert!(
            matching.peek().is_some(),
            "no series {name}{subset:?} in /metrics:\n{self}"
        );
        matching.map(|s| s.value).sum()
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.samples).finish()
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    // A timestamp may follow the value; the daemon does not send one, but it would be legal.
    let value = rest.split_whitespace().next().ok_or("no value")?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value: parse_value(value)?,
    })
}

/// Reads `label="value",...}` into `labels`; returns what follows the closing brace.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let (key, after_key) = rest.split_once('=').ok_or("label without '='")?;
        let mut chars = after_key
            .strip_prefix('"')
            .ok_or("unquoted label value")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("unknown escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        rest = &after_key[1 + end + 1..];
        rest = rest.trim_start().strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|e| format!("value {text:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# HELP zedi_connections_open Open WebSocket connections.
# TYPE zedi_connections_open gauge
zedi_connections_open 3
# TYPE zedi_protocol_errors_total counter
zedi_protocol_errors_total{kind=\"malformed_frame\"} 2
zedi_protocol_errors_total{kind=\"rate_limited\"} 5
zedi_store_seconds_bucket{op=\"append\",le=\"0.001\"} 1
zedi_store_seconds_bucket{op=\"append\",le=\"+Inf\"} 4
zedi_store_seconds_bucket{op=\"load\",le=\"+Inf\"} 7
odd{path=\"a \\\"quoted\\\" \\\\ back\\nslash\",x=\"}\"} 1.5e3
";

    #[test]
    fn reads_plain_and_labelled_series() {
        let m = Metrics::parse(SCRAPE).expect("parses");
        assert_eq!(m.value("zedi_connections_open", &[]), 3.0);
        assert_eq!(
            m.value("zedi_protocol_errors_total", &[("kind", "rate_limited")]),
            5.0
        );
        assert_eq!(
            m.get("zedi_protocol_errors_total", &[("kind", "bad_update")]),
            None
        );
        assert_eq!(
            m.families().collect::<Vec<_>>(),
            ["zedi_connections_open", "zedi_protocol_errors_total"]
        );
        // Exact labels: the histogram's series all carry `le`.
        assert_eq!(
            m.get("zedi_store_seconds_bucket", &[("op", "append")]),
            None
        );
    }

    #[test]
    fn sums_over_a_label_subset() {
        let m = Metrics::parse(SCRAPE).expect("parses");
        assert_eq!(m.sum("zedi_protocol_errors_total", &[]), 7.0);
        assert_eq!(m.sum("zedi_store_seconds_bucket", &[("op", "append")]), 5.0);
        assert_eq!(
            m.value(
                "zedi_store_seconds_bucket",
                &[("op", "load"), ("le", "+Inf")]
            ),
            7.0
        );
    }

    #[test]
    fn unescapes_label_values() {
        let m = Metrics::parse(SCRAPE).expect("parses");
        assert_eq!(
            m.value(
                "odd",
                &[("path", "a \"quoted\" \\ back\nslash"), ("x", "}")]
            ),
            1500.0
        );
    }

    #[test]
    #[should_panic(expected = "no series zedi_documents_open")]
    fn a_missing_series_fails_with_its_name() {
        Metrics::parse(SCRAPE)
            .expect("parses")
            .value("zedi_documents_open", &[]);
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(Metrics::parse("zedi_x{kind=\"a} 1").is_err());
        assert!(Metrics::parse("zedi_x{kind=a} 1").is_err());
        assert!(Metrics::parse("zedi_x one").is_err());
        assert!(Metrics::parse("zedi_x").is_err());
    }
}
