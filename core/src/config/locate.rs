//! Where in the file a key is: the line of `edge.routes[2].cluster` (or, when that key is
//! missing, of the deepest part of it that is there), so a problem reads `file:line: key`.

use toml::de::{DeTable, DeValue};

/// The 1-based line of `key` in `text`, if the text parses and some prefix of the key is in it.
pub(super) fn line_of(text: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    let doc = DeTable::parse(text).ok()?;
    let mut start: Option<usize> = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    for segment in key.split('.') {
        let (name, index) = split_index(segment);
        let Some(t) = table else { break };
        let Some((k, v)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == name) else { break };
        start = Some(k.span().start);
        let mut value = v;
        if let Some(i) = index {
            let DeValue::Array(items) = value.get_ref() else { break };
            let Some(item) = items.get(i) else { break };
            start = Some(item.span().start);
            value = item;
        }
        table = match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    start.map(|at| line_at(text, at))
}

/// The 1-based line holding byte `at`.
pub(super) fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// `routes[2]` -> (`routes`, Some(2)); `listen` -> (`listen`, None).
fn split_index(segment: &str) -> (&str, Option<usize>) {
    match segment.strip_suffix(']').and_then(|s| s.split_once('[')) {
        Some((name, i)) => (name, i.parse().ok()),
        None => (segment, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# a comment\n[edge]\nlisten = \"127.0.0.1:8080\"\n\n[[edge.routes]]\nservice = \"a\"\ncluster = \"x\"\n\n[[edge.routes]]\nservice = \"b\"\ncluster = \"y\"\n";

    #[test]
    fn finds_nested_keys_and_array_items() {
        assert_eq!(line_of(TEXT, "edge.listen"), Some(3));
        assert_eq!(line_of(TEXT, "edge.routes[1].cluster"), Some(11));
        assert_eq!(line_of(TEXT, "edge.routes[0].service"), Some(6));
    }

    #[test]
    fn a_missing_key_points_at_what_is_there() {
        // No `timeout` in the second route: its table is the place to add it.
        let line = line_of(TEXT, "edge.routes[1].timeout").expect("a line");
        assert!((9..=10).contains(&line), "line {line}");
        assert_eq!(line_of(TEXT, "kafka.bootstrap"), None);
        assert_eq!(line_of(TEXT, ""), None);
    }
}
