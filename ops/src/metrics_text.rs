//! Prometheus text format (what every Paymesh process serves at `/metrics`) read into
//! samples: name, labels, value. Comment lines are skipped; a line that does not parse is
//! skipped too, never guessed at.

use std::collections::BTreeMap;

/// One sample.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of `text` whose name starts with `prefix`.
pub fn parse(text: &str, prefix: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && l.starts_with(prefix)).filter_map(sample).collect()
}

fn sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (&line[..open], labels(&line[open + 1..close])?, &line[close + 1..])
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    // JSON has no infinities or NaN: such samples are left out.
    value.is_finite().then(|| Sample { name: name.to_owned(), labels, value })
}

/// `a="x",b="y \"q\""` into a map.
fn labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if s.is_empty() {
            return Some(out);
        }
        let (key, rest) = s.split_once('=')?;
        let mut chars = rest.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.insert(key.trim().to_owned(), value);
        s = &rest[end + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_and_without_labels() {
        let text = "# HELP x y\n# TYPE x counter\n\
                    paymesh_edge_requests_total{protocol=\"grpc\",route=\"/a \\\"b\\\"\",code=\"OK\"} 12\n\
                    paymesh_up 1\n\
                    paymesh_h_bucket{le=\"+Inf\"} 3\n\
                    other_metric 5\n\
                    paymesh_broken{a=\"1\" 7\n\
                    paymesh_nan NaN\n";
        let all = parse(text, "paymesh_");
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0].name, "paymesh_edge_requests_total");
        assert_eq!(all[0].labels["route"], "/a \"b\"");
        assert_eq!(all[0].labels["code"], "OK");
        assert_eq!(all[0].value, 12.0);
        assert_eq!((all[1].name.as_str(), all[1].value), ("paymesh_up", 1.0));
        assert_eq!(all[2].labels["le"], "+Inf");
        assert!(parse(text, "nothing_").is_empty());
    }
}
