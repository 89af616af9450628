//! `google.api.http` path templates: parsing and matching.
//!
//! Grammar (from google/api/http.proto):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `{name}` is `{name=*}`: one segment. `**` matches zero or more segments; it may stand
//! anywhere (`/v1/{name=**}/versions`, as Envoy's matcher allows), at most once per template.
//! A verb may itself contain ':' (`/v1/{id}:custom:custom` has the verb `custom:custom`): it
//! starts at the first ':' outside braces after the last '/'.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more segments (at most one per template).
    Rest,
}

/// A variable binding segments `start..end` (end `None` = through the `**`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Variable {
    field_path: String,
    start: usize,
    end: usize,
}

/// A compiled path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

/// A path parameter of [`PathTemplate::openapi`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenApiParam {
    pub name: String,
    /// The request field it binds (`None` for a wildcard outside any variable).
    pub field: Option<String>,
    /// The segments it matches, in template syntax (`*`, `shelves/*`, `**`).
    pub pattern: String,
}

impl Segment {
    fn text(&self) -> &str {
        match self {
            Segment::Literal(l) => l,
            Segment::One => "*",
            Segment::Rest => "**",
        }
    }
}

/// Why a template is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template '{template}': {why}")]
pub struct TemplateError {
    template: String,
    why: String,
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let bad = |why: &str| TemplateError { template: template.to_owned(), why: why.to_owned() };
        let body = template.strip_prefix('/').ok_or_else(|| bad("must start with '/'"))?;
        // The verb is a ':' after the last '/' that is not inside braces.
        let (body, verb) = split_verb(body);
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let close = inner.find('}').ok_or_else(|| bad("unclosed '{'"))?;
                let (var, after) = (&inner[..close], &inner[close + 1..]);
                let (field_path, pattern) = var.split_once('=').unwrap_or((var, "*"));
                if field_path.is_empty() || !field_path.split('.').all(is_ident) {
                    return Err(bad(&format!("'{field_path}' is not a field path")));
                }
                if variables.iter().any(|v: &Variable| v.field_path == field_path) {
                    return Err(bad(&format!("'{field_path}' is bound twice")));
                }
                let start = segments.len();
                for part in pattern.split('/') {
                    segments.push(segment(part).ok_or_else(|| bad(&format!("'{part}' is not a segment")))?);
                }
                variables.push(Variable { field_path: field_path.to_owned(), start, end: segments.len() });
                rest = after.strip_prefix('/').unwrap_or(after);
                if !after.is_empty() && !after.starts_with('/') {
                    return Err(bad("a variable must be followed by '/' or the end"));
                }
            } else {
                let end = rest.find('/').unwrap_or(rest.len());
                let part = &rest[..end];
                segments.push(segment(part).ok_or_else(|| bad(&format!("'{part}' is not a segment")))?);
                rest = rest.get(end + 1..).unwrap_or("");
            }
        }
        if segments.iter().filter(|s| **s == Segment::Rest).count() > 1 {
            return Err(bad("'**' may appear only once"));
        }
        if verb.is_some_and(|v| v.is_empty() || v.contains(['{', '}', '*', '='])) {
            return Err(bad("the verb after ':' must be a literal"));
        }
        Ok(Self { source: template.to_owned(), segments, variables, verb: verb.map(str::to_owned) })
    }

    /// Matches a request path (without the query string). On success returns the bound
    /// variables, percent-decoded, as `(field path, value)`.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let body = path.strip_prefix('/')?;
        // The request's custom verb is split off first (as Envoy and grpc-gateway do), so
        // `/person/jason:verb` is GetPerson only if a binding has that verb, never GetPerson
        // with id `jason:verb`. A template's verb is matched as the path's ending; a template
        // without one matches no path whose last segment has a ':'.
        let last_segment = body.rfind('/').map_or(0, |i| i + 1);
        let body = match &self.verb {
            Some(verb) => {
                // `:verb` at the end, compared as bytes: a path may hold any UTF-8 (found by
                // the fuzzer: slicing at a byte inside a character panicked).
                let ending = body.len().checked_sub(verb.len() + 1)?;
                let tail = &body.as_bytes()[ending..];
                if ending < last_segment || tail[0] != b':' || &tail[1..] != verb.as_bytes() {
                    return None;
                }
                &body[..ending]
            }
            None if body[last_segment..].contains(':') => return None,
            None => body,
        };
        let parts: Vec<&str> = if body.is_empty() { Vec::new() } else { body.split('/').collect() };
        // With a `**` at `rest`, the path has `extra` segments for it; every segment of the
        // template before it lines up with the path's start, every one after with its end.
        let rest = self.segments.iter().position(|s| *s == Segment::Rest);
        let fixed = self.segments.len() - usize::from(rest.is_some());
        if parts.len() < fixed || (rest.is_none() && parts.len() != fixed) {
            return None;
        }
        let extra = parts.len() - fixed;
        // Where template boundary `b` (0..=segments) falls in the path.
        let at = |b: usize| match rest {
            Some(r) if b > r => b - 1 + extra,
            _ => b,
        };
        for (i, seg) in self.segments.iter().enumerate() {
            let part = match seg {
                Segment::Rest => continue,
                _ => parts[at(i)],
            };
            match seg {
                Segment::Literal(l) if l != part => return None,
                Segment::One if part.is_empty() => return None,
                _ => {}
            }
        }
        let mut bound = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let (start, end) = (at(v.start), at(v.end));
            // google/api/http.proto: a variable of several segments (or `**`) keeps an encoded
            // '/' (%2F) as it came, so it stays distinguishable from a segment separator.
            let has_rest = rest.is_some_and(|r| (v.start..v.end).contains(&r));
            let multi = v.end - v.start != 1 || has_rest;
            let decode = |p: &&str| if multi { percent_decode_keeping_slash(p) } else { percent_decode(p) };
            let value = parts[start..end].iter().map(decode).collect::<Option<Vec<_>>>()?.join("/");
            bound.push((v.field_path.clone(), value));
        }
        Some(bound)
    }

    /// The template's first segment when it is a literal (the key of the catalog's index).
    pub fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(l)) => Some(l),
            _ => None,
        }
    }

    /// Higher is more specific: literal segments count most, then fixed length.
    pub fn specificity(&self) -> (usize, usize) {
        let literals = self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count() + usize::from(self.verb.is_some());
        (literals, self.segments.len())
    }

    /// The paths this template matches, without its variables' names: two bindings of one
    /// HTTP verb with the same shape would match the same requests.
    pub fn shape(&self) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            out.push('/');
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::One => out.push('*'),
                Segment::Rest => out.push_str("**"),
            }
        }
        if let Some(v) = &self.verb {
            out.push(':');
            out.push_str(v);
        }
        out
    }

    /// The template as an OpenAPI path (`/v1/{name}:archive`) and its path parameters: each
    /// variable is one parameter named by its field path, whatever segments it spans (the
    /// parameter's pattern says which); a wildcard outside any variable is a parameter of its
    /// own (`{_wildcard1}`) that binds no field.
    pub fn openapi(&self) -> (String, Vec<OpenApiParam>) {
        let mut path = String::new();
        let mut params = Vec::new();
        let mut i = 0;
        while i < self.segments.len() {
            path.push('/');
            if let Some(v) = self.variables.iter().find(|v| v.start == i) {
                path.push('{');
                path.push_str(&v.field_path);
                path.push('}');
                let pattern = self.segments[v.start..v.end].iter().map(Segment::text).collect::<Vec<_>>().join("/");
                params.push(OpenApiParam { name: v.field_path.clone(), field: Some(v.field_path.clone()), pattern });
                i = v.end.max(i + 1);
                continue;
            }
            match &self.segments[i] {
                Segment::Literal(l) => path.push_str(l),
                wildcard => {
                    let name = format!("_wildcard{}", params.iter().filter(|p| p.field.is_none()).count() + 1);
                    path.push('{');
                    path.push_str(&name);
                    path.push('}');
                    params.push(OpenApiParam { name, field: None, pattern: wildcard.text().to_owned() });
                }
            }
            i += 1;
        }
        if path.is_empty() {
            path.push('/');
        }
        if let Some(v) = &self.verb {
            path.push(':');
            path.push_str(v);
        }
        (path, params)
    }

    /// The field paths this template binds.
    pub fn bound_fields(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|v| v.field_path.as_str())
    }
}

fn split_verb(body: &str) -> (&str, Option<&str>) {
    // The verb starts at the first ':' outside braces after the last '/' outside braces.
    let mut depth = 0i32;
    let mut colon = None;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' if depth == 0 => colon = None,
            ':' if depth == 0 && colon.is_none() => colon = Some(i),
            _ => {}
        }
    }
    match colon {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    }
}

fn segment(part: &str) -> Option<Segment> {
    match part {
        "*" => Some(Segment::One),
        "**" => Some(Segment::Rest),
        "" => None,
        lit if !lit.contains(['{', '}', '*', '=']) => Some(Segment::Literal(lit.to_owned())),
        _ => None,
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
/// [`percent_decode`], except that `%2F`/`%2f` stay encoded (multi-segment variables).
fn percent_decode_keeping_slash(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        let (head, tail) = rest.split_at(i);
        out.push_str(&percent_decode(head)?);
        let esc = tail.get(..3)?;
        if esc.eq_ignore_ascii_case("%2f") {
            out.push_str(esc);
        } else {
            out.push_str(&percent_decode(esc)?);
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    Some(out)
}

pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> PathTemplate {
        PathTemplate::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn vars(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn literal_paths() {
        let a = t("/api/payments/authorize");
        assert_eq!(a.matches("/api/payments/authorize"), vars(&[]));
        assert_eq!(a.matches("/api/payments/authorize/"), None);
        assert_eq!(a.matches("/api/payments"), None);
        assert_eq!(a.matches("/api/payments/authorizeX"), None);
    }

    #[test]
    fn single_segment_variables() {
        let c = t("/api/payments/{payment_id}/capture");
        assert_eq!(c.matches("/api/payments/pay_0_ab/capture"), vars(&[("payment_id", "pay_0_ab")]));
        assert_eq!(c.matches("/api/payments//capture"), None);
        assert_eq!(c.matches("/api/payments/a/b/capture"), None);
        assert_eq!(c.matches("/api/payments/a%20b/capture"), vars(&[("payment_id", "a b")]));
        assert_eq!(c.matches("/api/payments/%zz/capture"), None);
    }

    #[test]
    fn patterned_and_nested_variables() {
        let b = t("/v1/{book.name=shelves/*/books/*}");
        assert_eq!(b.matches("/v1/shelves/s1/books/b2"), vars(&[("book.name", "shelves/s1/books/b2")]));
        assert_eq!(b.matches("/v1/shelves/s1/books"), None);
        let r = t("/v1/files/{path=**}");
        assert_eq!(r.matches("/v1/files/a/b/c"), vars(&[("path", "a/b/c")]));
        assert_eq!(r.matches("/v1/files"), vars(&[("path", "")]));
    }

    #[test]
    fn verbs() {
        let s = t("/v1/items:search");
        assert_eq!(s.matches("/v1/items:search"), vars(&[]));
        assert_eq!(s.matches("/v1/items"), None);
        let u = t("/v1/{name=items/*}:undelete");
        assert_eq!(u.matches("/v1/items/7:undelete"), vars(&[("name", "items/7")]));
        assert_eq!(u.matches("/v1/items/7:delete"), None);
    }

    #[test]
    fn an_encoded_slash_stays_encoded_only_in_multi_segment_variables() {
        assert_eq!(t("/v1/{id}").matches("/v1/a%2Fb"), vars(&[("id", "a/b")]));
        assert_eq!(t("/v1/{path=**}").matches("/v1/a%2Fb/c%20d"), vars(&[("path", "a%2Fb/c d")]));
        assert_eq!(t("/v1/{name=shelves/*}").matches("/v1/shelves/x%2fy"), vars(&[("name", "shelves/x%2fy")]));
    }

    #[test]
    fn a_requests_verb_is_split_off_before_matching() {
        let get = t("/person/{id}");
        assert_eq!(get.matches("/person/jason:verb"), None, "a verb is not part of the id");
        assert_eq!(get.matches("/person/jason"), vars(&[("id", "jason")]));
        // An encoded ':' is data, not a verb.
        assert_eq!(get.matches("/person/a%3Ab"), vars(&[("id", "a:b")]));
        let rest = t("/v1/files/{path=**}");
        assert_eq!(rest.matches("/v1/files/a/b:copy"), None);
        // A ':' before the last segment is data.
        assert_eq!(rest.matches("/v1/files/a:b/c"), vars(&[("path", "a:b/c")]));
    }

    #[test]
    fn a_double_wildcard_can_stand_before_other_segments() {
        let v = t("/v1/{name=**}/versions/{version}");
        assert_eq!(v.matches("/v1/a/b/versions/3"), vars(&[("name", "a/b"), ("version", "3")]));
        assert_eq!(v.matches("/v1/versions/3"), vars(&[("name", ""), ("version", "3")]));
        assert_eq!(v.matches("/v1/a/versions"), None);
        let mid = t("/v1/files/**/meta");
        assert_eq!(mid.matches("/v1/files/x/y/meta"), vars(&[]));
        assert_eq!(mid.matches("/v1/files/x/y/data"), None);
        let verb = t("/v1/{path=files/**}:stat");
        assert_eq!(verb.matches("/v1/files/a/b:stat"), vars(&[("path", "files/a/b")]));
        assert_eq!(verb.matches("/v1/files/a/b"), None);
    }

    /// Found by the fuzzer: a path with a multi-byte character where the verb would start
    /// panicked (a string sliced inside a character).
    #[test]
    fn paths_with_any_characters_match_or_not_without_panicking() {
        let c = t("/v1/{id}:custom");
        assert_eq!(c.matches("/v1/abc:custo\u{e9}"), None);
        assert_eq!(c.matches("/v1/\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}"), None);
        assert_eq!(c.matches("/v1/\u{e9}:custom"), vars(&[("id", "\u{e9}")]));
    }

    #[test]
    fn a_verb_may_contain_colons() {
        let c = t("/v1/{id}:custom:custom");
        assert_eq!(c.to_string(), "/v1/{id}:custom:custom");
        assert_eq!(c.matches("/v1/abc:custom:custom"), vars(&[("id", "abc")]));
        assert_eq!(c.matches("/v1/abc:custom"), None);
        assert_eq!(c.matches("/v1/:custom:custom"), None, "an empty id");
        let one = t("/v1/{id}:custom");
        assert_eq!(one.matches("/v1/abc:x:custom"), vars(&[("id", "abc:x")]));
    }

    #[test]
    fn templates_become_openapi_paths() {
        let (path, params) = t("/v1/{name=shelves/*/books/*}:archive:now").openapi();
        assert_eq!(path, "/v1/{name}:archive:now");
        assert_eq!(params, [OpenApiParam { name: "name".into(), field: Some("name".into()), pattern: "shelves/*/books/*".into() }]);
        let (path, params) = t("/v1/*/files/**").openapi();
        assert_eq!(path, "/v1/{_wildcard1}/files/{_wildcard2}");
        assert_eq!(params.iter().map(|p| p.pattern.as_str()).collect::<Vec<_>>(), ["*", "**"]);
        assert_eq!(t("/").openapi().0, "/");
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in ["api", "/a/{", "/a/{}", "/a/{x}/{x}", "/a/**/b/**", "/a/{1x}", "/a//b", "/a/{x}y", "/a:", "/a:{x}"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn templates_that_match_the_same_paths_have_the_same_shape() {
        assert_eq!(t("/v1/{a}/x").shape(), t("/v1/{b}/x").shape());
        assert_eq!(t("/v1/{name=shelves/*}").shape(), "/v1/shelves/*");
        assert_ne!(t("/v1/{a}").shape(), t("/v1/{a}:go").shape());
    }

    #[test]
    fn literal_templates_are_more_specific() {
        assert!(t("/api/payments/authorize").specificity() > t("/api/payments/{payment_id}").specificity());
    }
}
