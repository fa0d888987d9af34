//! Metrics as Prometheus' text format (0.0.4) has them, from what
//! `prometheus-client` encodes (OpenMetrics): there a counter's family is
//! `name` and its sample `name_total`, here both are `name_total`, and
//! there is neither `# UNIT` nor `# EOF`. Prometheus reads either; its `promtool check
//! metrics` and older scrapers read only this one.

/// The content type of [`to_text_format`]'s output.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `openmetrics` in the text format.
pub fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        // The text format has no units (they are in the names) and no end mark.
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(renamed.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_and_eof_goes() {
        let openmetrics = "# HELP paz_proxy_requests Requests answered.\n# TYPE paz_proxy_requests counter\npaz_proxy_requests_total{app=\"a\"} 3\n# HELP paz_proxy_table_backends Instances.\n# TYPE paz_proxy_table_backends gauge\npaz_proxy_table_backends 4\n# EOF\n";
        assert_eq!(
            to_text_format(openmetrics),
            "# HELP paz_proxy_requests_total Requests answered.\n# TYPE paz_proxy_requests_total counter\npaz_proxy_requests_total{app=\"a\"} 3\n# HELP paz_proxy_table_backends Instances.\n# TYPE paz_proxy_table_backends gauge\npaz_proxy_table_backends 4\n"
        );
    }
}
