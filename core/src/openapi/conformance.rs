//! Does a live response match its OpenAPI document? Used by the services' integration tests:
//! every response their HTTP helpers receive goes through [`Conformance::check`].
//!
//! For the operation of a method and a concrete path (matched against the document's path
//! templates), a response must:
//!
//! - have a status the operation lists: a success status (`1xx`–`3xx`) only when listed
//!   exactly; an error status when listed exactly, as a range (`4XX`), or through `default`;
//! - carry a `Content-Type` the response documents (compared without parameters), or no body
//!   when it documents no content;
//! - for JSON, validate against the documented schema (below);
//! - carry no `keymesh-*` header the response does not document.
//!
//! A request to a path or method the document does not have may only be refused with the
//! coded error body ([`crate::error::ErrorBody`]).
//!
//! The schema check covers the JSON Schema (2020-12) keywords utoipa emits: `$ref` (into the
//! document), `type` (one or a list), `enum`, `const`, `properties`, `required`,
//! `additionalProperties`, `items`, `allOf`, `oneOf`, `anyOf`, `minimum`, `maximum`,
//! `minLength`, `maxLength`, `pattern`, `minItems`, `maxItems`; annotations are ignored, and any
//! other keyword is reported rather than skipped. It is **stricter** than JSON Schema in one
//! way: an object schema that declares `properties` (itself or through `allOf`, `oneOf`,
//! `anyOf`, `$ref`) and says nothing of `additionalProperties` is closed, so a response field
//! the document does not describe fails the check. A schema of `type: object` without
//! `properties` is a free-form object.

use std::collections::BTreeSet;

use http::HeaderMap;
use serde_json::{Map, Value};

/// Keywords that only annotate.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "example",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "contentMediaType",
    "contentEncoding",
    "discriminator",
    "externalDocs",
    "xml",
    "$comment",
];

/// Keywords the validator applies.
const APPLIED: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "allOf",
    "oneOf",
    "anyOf",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One service's document, ready to check responses against.
#[derive(Debug, Clone)]
pub struct Conformance {
    doc: Value,
}

/// The operation a request reached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    /// Upper-case method.
    pub method: String,
    /// The document's path template.
    pub path: String,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

impl Conformance {
    /// Over a document (`serde_json::to_value` of an [`utoipa::openapi::OpenApi`], or a
    /// `docs/openapi/*.json` file read as JSON).
    pub fn new(doc: Value) -> Self {
        Self { doc }
    }

    /// Over a document file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map(Self::new)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Every operation of the document.
    pub fn operations(&self) -> BTreeSet<Operation> {
        let mut out = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for method in METHODS {
                if item.get(method).is_some() {
                    out.insert(Operation {
                        method: method.to_uppercase(),
                        path: path.clone(),
                    });
                }
            }
        }
        out
    }

    /// The operation `method` `uri` (a path, with or without a query) reaches, if documented.
    /// A literal segment wins over a parameter; a last parameter may span several segments
    /// (a catch-all such as a secret path) when nothing matches segment for segment.
    pub fn operation(&self, method: &str, uri: &str) -> Option<Operation> {
        let path = uri.split(['?', '#']).next().unwrap_or_default();
        let wanted: Vec<&str> = path.split('/').collect();
        let method = method.to_lowercase();
        let mut best: Option<((bool, usize), &String)> = None;
        for (template, item) in self.doc["paths"].as_object().into_iter().flatten() {
            if item.get(&method).is_none() {
                continue;
            }
            let parts: Vec<&str> = template.split('/').collect();
            let Some(rank) = match_template(&parts, &wanted) else {
                continue;
            };
            if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                best = Some((rank, template));
            }
        }
        best.map(|(_, template)| Operation {
            method: method.to_uppercase(),
            path: template.clone(),
        })
    }

    /// Check one response; `Err` says what does not match, naming the route and status.
    /// `Ok` names the operation checked (`None`: an undocumented route's coded refusal).
    pub fn check(
        &self,
        method: &str,
        uri: &str,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Option<Operation>, String> {
        self.check_parts(method, uri, status, headers, Some(body))
    }

    /// [`Conformance::check`] for a streamed response whose body is not read: its status,
    /// content type and headers.
    pub fn check_head(
        &self,
        method: &str,
        uri: &str,
        status: u16,
        headers: &HeaderMap,
    ) -> Result<Option<Operation>, String> {
        self.check_parts(method, uri, status, headers, None)
    }

    fn check_parts(
        &self,
        method: &str,
        uri: &str,
        status: u16,
        headers: &HeaderMap,
        body: Option<&[u8]>,
    ) -> Result<Option<Operation>, String> {
        let Some(operation) = self.operation(method, uri) else {
            let route = format!("{} {uri} (undocumented route)", method.to_uppercase());
            if status < 400 {
                return Err(format!(
                    "{route} answered {status}: only an error may come from a route the document does not have"
                ));
            }
            let schema = serde_json::json!({ "$ref": "#/components/schemas/ErrorBody" });
            return self
                .check_content(&route, status, headers, body, "application/json", &schema)
                .map(|()| None);
        };
        let route = format!("{operation} (for {uri})");
        let op = &self.doc["paths"][&operation.path][operation.method.to_lowercase()];
        let responses = &op["responses"];
        let key = status.to_string();
        let range = format!("{}XX", status / 100);
        let response = match responses.get(&key) {
            Some(r) => r,
            None if status >= 400 => responses
                .get(&range)
                .or_else(|| responses.get("default"))
                .ok_or_else(|| format!("{route}: status {status} is not documented"))?,
            None => {
                let listed: Vec<&String> = responses
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k)
                    .collect();
                return Err(format!(
                    "{route}: status {status} is not documented (documented: {listed:?})"
                ));
            }
        };
        let response = self
            .resolve(response)
            .map_err(|e| format!("{route}: {e}"))?;
        let documented: BTreeSet<String> = response["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, _)| name.to_lowercase())
            .collect();
        for name in headers.keys() {
            if name.as_str().starts_with("keymesh-") && !documented.contains(name.as_str()) {
                return Err(format!(
                    "{route}: status {status} carries the header {name}, which the document does not describe for this response"
                ));
            }
        }
        let content = response["content"].as_object();
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            return match body {
                Some(body) if !body.is_empty() => Err(format!(
                    "{route}: status {status} documents no body but the response has {} bytes",
                    body.len()
                )),
                _ => Ok(Some(operation)),
            };
        };
        let actual = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = media_essence(actual);
        let Some((media, entry)) = content.iter().find(|(m, _)| media_essence(m) == essence) else {
            let listed: Vec<&String> = content.keys().collect();
            return Err(format!(
                "{route}: status {status} has Content-Type {actual:?}, the document says {listed:?}"
            ));
        };
        self.check_content(&route, status, headers, body, media, &entry["schema"])
            .map(|()| Some(operation))
    }

    fn check_content(
        &self,
        route: &str,
        status: u16,
        headers: &HeaderMap,
        body: Option<&[u8]>,
        media: &str,
        schema: &Value,
    ) -> Result<(), String> {
        let actual = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if media_essence(actual) != media_essence(media) {
            return Err(format!(
                "{route}: status {status} has Content-Type {actual:?}, the document says {media:?}"
            ));
        }
        let Some(body) = body else {
            return Ok(());
        };
        let essence = media_essence(media);
        if essence == "application/json" || essence.ends_with("+json") {
            let value: Value = serde_json::from_slice(body).map_err(|e| {
                format!(
                    "{route}: status {status} is not JSON ({e}): {}",
                    String::from_utf8_lossy(body)
                )
            })?;
            let errors = self.validate(schema, &value);
            if !errors.is_empty() {
                return Err(format!(
                    "{route}: status {status}: the body does not match the document:\n  {}\nbody: {value}",
                    errors.join("\n  ")
                ));
            }
        } else if essence.starts_with("text/") && std::str::from_utf8(body).is_err() {
            return Err(format!(
                "{route}: status {status}: {media} body is not UTF-8"
            ));
        }
        Ok(())
    }

    /// Errors of `value` against `schema` (empty: it validates).
    pub fn validate(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.at(schema, value, "$", true, 0, &mut errors);
        errors
    }

    /// `value`, or what its `$ref` points at.
    fn resolve<'a>(&'a self, value: &'a Value) -> Result<&'a Value, String> {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => self.target(reference),
            None => Ok(value),
        }
    }

    /// What a local reference (`#/components/...`) points at.
    fn target(&self, reference: &str) -> Result<&Value, String> {
        let pointer = reference
            .strip_prefix('#')
            .ok_or_else(|| format!("{reference}: only local references are supported"))?;
        self.doc
            .pointer(pointer)
            .ok_or_else(|| format!("{reference} resolves to nothing"))
    }

    /// Validate `value` at `where_` against `schema`; the property names of `value` (an object)
    /// that `schema` evaluated, and whether it declared any (`properties` somewhere) or left
    /// the object open (`additionalProperties`). `closed`: this is the outermost schema of
    /// this instance, which closes the object.
    fn at(
        &self,
        schema: &Value,
        value: &Value,
        where_: &str,
        closed: bool,
        depth: usize,
        errors: &mut Vec<String>,
    ) -> Evaluated {
        let mut seen = Evaluated::default();
        if depth > 64 {
            errors.push(format!(
                "{where_}: schema nesting deeper than 64 (a reference cycle?)"
            ));
            return seen;
        }
        let schema = match schema {
            Value::Bool(true) => return Evaluated::open(),
            Value::Bool(false) => {
                errors.push(format!("{where_}: no value is allowed here"));
                return seen;
            }
            Value::Object(map) => map,
            _ => {
                errors.push(format!("{where_}: the schema is not an object"));
                return seen;
            }
        };
        for key in schema.keys() {
            if !APPLIED.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                errors.push(format!("{where_}: unsupported schema keyword {key:?}"));
            }
        }
        if let Some(reference) = schema.get("$ref") {
            match reference
                .as_str()
                .ok_or_else(|| "$ref is not a string".to_owned())
                .and_then(|r| self.target(r))
            {
                Ok(target) => seen.merge(self.at(target, value, where_, false, depth + 1, errors)),
                Err(e) => errors.push(format!("{where_}: {e}")),
            }
        }
        if let Some(types) = schema.get("type") {
            let names: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !names.iter().any(|t| is_type(value, t)) {
                errors.push(format!(
                    "{where_}: {} is not of type {}",
                    kind(value),
                    names.join(" or ")
                ));
                return seen;
            }
        }
        if let Some(Value::Array(allowed)) = schema.get("enum")
            && !allowed.contains(value)
        {
            errors.push(format!(
                "{where_}: {value} is not one of {}",
                Value::Array(allowed.clone())
            ));
        }
        if let Some(constant) = schema.get("const")
            && constant != value
        {
            errors.push(format!("{where_}: {value} is not {constant}"));
        }
        match value {
            Value::Object(object) => self.object(schema, object, where_, depth, errors, &mut seen),
            Value::Array(items) => self.array(schema, items, where_, depth, errors),
            Value::String(text) => string(schema, text, where_, errors),
            Value::Number(_) => number(schema, value, where_, errors),
            _ => {}
        }
        if let Some(Value::Array(branches)) = schema.get("allOf") {
            for branch in branches {
                seen.merge(self.at(branch, value, where_, false, depth + 1, errors));
            }
        }
        for (keyword, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            let Some(Value::Array(branches)) = schema.get(keyword) else {
                continue;
            };
            let mut matched = Vec::new();
            let mut failures = Vec::new();
            for (i, branch) in branches.iter().enumerate() {
                let mut branch_errors = Vec::new();
                let branch_seen =
                    self.at(branch, value, where_, false, depth + 1, &mut branch_errors);
                if branch_errors.is_empty() {
                    matched.push(branch_seen);
                } else {
                    failures.push(format!("[{i}] {}", branch_errors.join("; ")));
                }
            }
            match matched.len() {
                0 => errors.push(format!(
                    "{where_}: matches none of {keyword}: {}",
                    failures.join(" | ")
                )),
                n if n > 1 && exactly_one => {
                    errors.push(format!("{where_}: matches {n} branches of oneOf, not one"));
                }
                _ => matched.into_iter().for_each(|m| seen.merge(m)),
            }
        }
        if closed
            && let Value::Object(object) = value
            && seen.declared
            && !seen.open
        {
            for key in object.keys() {
                if !seen.names.contains(key) {
                    errors.push(format!(
                        "{where_}: the field {key:?} is not in the document"
                    ));
                }
            }
        }
        seen
    }

    fn object(
        &self,
        schema: &Map<String, Value>,
        object: &Map<String, Value>,
        where_: &str,
        depth: usize,
        errors: &mut Vec<String>,
        seen: &mut Evaluated,
    ) {
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    errors.push(format!("{where_}: the required field {name:?} is missing"));
                }
            }
        }
        if let Some(Value::Object(properties)) = schema.get("properties") {
            seen.declared = true;
            for (name, property) in properties {
                seen.names.insert(name.clone());
                if let Some(v) = object.get(name) {
                    self.at(
                        property,
                        v,
                        &format!("{where_}.{name}"),
                        true,
                        depth + 1,
                        errors,
                    );
                }
            }
        }
        match schema.get("additionalProperties") {
            None => {}
            Some(Value::Bool(false)) => {
                seen.declared = true;
                let known: BTreeSet<&String> = schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|p| p.keys().collect())
                    .unwrap_or_default();
                for key in object.keys().filter(|k| !known.contains(k)) {
                    errors.push(format!(
                        "{where_}: the field {key:?} is not in the document"
                    ));
                }
            }
            Some(extra) => {
                seen.open = true;
                let known: BTreeSet<&String> = schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|p| p.keys().collect())
                    .unwrap_or_default();
                for (key, v) in object.iter().filter(|(k, _)| !known.contains(k)) {
                    self.at(
                        extra,
                        v,
                        &format!("{where_}.{key}"),
                        true,
                        depth + 1,
                        errors,
                    );
                }
            }
        }
    }

    fn array(
        &self,
        schema: &Map<String, Value>,
        items: &[Value],
        where_: &str,
        depth: usize,
        errors: &mut Vec<String>,
    ) {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            errors.push(format!("{where_}: fewer than {min} items"));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && (items.len() as u64) > max
        {
            errors.push(format!("{where_}: more than {max} items"));
        }
        if let Some(item) = schema.get("items") {
            for (i, v) in items.iter().enumerate() {
                self.at(item, v, &format!("{where_}[{i}]"), true, depth + 1, errors);
            }
        }
    }
}

/// What a schema evaluated of one object.
#[derive(Debug, Default)]
struct Evaluated {
    /// Property names some `properties` covered.
    names: BTreeSet<String>,
    /// Some schema declared `properties` (or closed the object).
    declared: bool,
    /// Some schema allowed additional properties.
    open: bool,
}

impl Evaluated {
    fn open() -> Self {
        Self {
            open: true,
            ..Self::default()
        }
    }

    fn merge(&mut self, other: Evaluated) {
        self.names.extend(other.names);
        self.declared |= other.declared;
        self.open |= other.open;
    }
}

/// Match a template's segments against a path's: `(exact segment count, literal segments)`
/// ranks a match, `None` when it does not match.
fn match_template(template: &[&str], path: &[&str]) -> Option<(bool, usize)> {
    let is_param = |s: &str| s.starts_with('{') && s.ends_with('}');
    let literal = template.iter().filter(|s| !is_param(s)).count();
    if template.len() == path.len() {
        return template
            .iter()
            .zip(path)
            .all(|(t, p)| if is_param(t) { !p.is_empty() } else { t == p })
            .then_some((true, literal));
    }
    // A last parameter spanning several segments (a catch-all).
    let (last, head) = template.split_last()?;
    if !is_param(last) || path.len() <= template.len() {
        return None;
    }
    let fits = head
        .iter()
        .zip(path)
        .all(|(t, p)| if is_param(t) { !p.is_empty() } else { t == p })
        && path[head.len()..].iter().all(|p| !p.is_empty());
    fits.then_some((false, literal))
}

/// `type/subtype`, lower-case, without parameters.
fn media_essence(media: &str) -> String {
    media
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_lowercase()
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string(schema: &Map<String, Value>, text: &str, where_: &str, errors: &mut Vec<String>) {
    let length = text.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        errors.push(format!("{where_}: shorter than {min} characters"));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        errors.push(format!("{where_}: longer than {max} characters"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(text) => {}
            Ok(_) => errors.push(format!("{where_}: {text:?} does not match {pattern:?}")),
            Err(e) => errors.push(format!(
                "{where_}: pattern {pattern:?} does not compile: {e}"
            )),
        }
    }
}

fn number(schema: &Map<String, Value>, value: &Value, where_: &str, errors: &mut Vec<String>) {
    let Some(n) = value.as_f64() else {
        return;
    };
    let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
    if let Some(min) = bound("minimum")
        && n < min
    {
        errors.push(format!("{where_}: {value} is below the minimum {min}"));
    }
    if let Some(max) = bound("maximum")
        && n > max
    {
        errors.push(format!("{where_}: {value} is above the maximum {max}"));
    }
    if let Some(min) = bound("exclusiveMinimum")
        && n <= min
    {
        errors.push(format!("{where_}: {value} is not above {min}"));
    }
    if let Some(max) = bound("exclusiveMaximum")
        && n >= max
    {
        errors.push(format!("{where_}: {value} is not below {max}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, header};
    use serde_json::json;

    fn doc() -> Conformance {
        Conformance::new(json!({
            "paths": {
                "/v1/things": {
                    "post": { "responses": {
                        "201": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Thing" } } } },
                        "409": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } },
                        "default": { "$ref": "#/components/responses/Error" }
                    } }
                },
                "/v1/things/{id}": {
                    "get": { "responses": {
                        "200": { "content": { "text/html": { "schema": { "type": "string" } } },
                                 "headers": { "Keymesh-Error-Code": { "schema": { "type": "string" } } } },
                        "204": { "description": "none" }
                    } }
                },
                "/v1/things/special": { "get": { "responses": { "204": { "description": "none" } } } },
                "/v1/files/{group}/{path}": { "get": { "responses": { "204": { "description": "none" } } } }
            },
            "components": {
                "schemas": {
                    "Thing": {
                        "allOf": [
                            { "type": "object", "required": ["id"], "properties": { "id": { "type": "string", "pattern": "^[a-z]+$" } } },
                            { "type": "object", "properties": {
                                "size": { "type": ["integer", "null"], "minimum": 0 },
                                "kind": { "oneOf": [
                                    { "type": "object", "required": ["a"], "properties": { "a": { "type": "boolean" } } },
                                    { "type": "object", "required": ["b"], "properties": { "b": { "enum": ["x", "y"] } } }
                                ] },
                                "free": { "type": "object" },
                                "map": { "type": "object", "additionalProperties": { "type": "integer" } }
                            } }
                        ]
                    },
                    "ErrorBody": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": { "code": { "type": "string" }, "message": { "type": "string" }, "details": { "type": ["object", "null"] } } } } }
                },
                "responses": { "Error": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } } }
            }
        }))
    }

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h
    }

    fn post(body: Value) -> Result<Option<Operation>, String> {
        doc().check(
            "POST",
            "/v1/things",
            201,
            &json_headers(),
            body.to_string().as_bytes(),
        )
    }

    #[test]
    fn a_matching_body_passes_and_names_its_operation() {
        let op = post(json!({ "id": "abc", "size": null, "kind": { "b": "x" }, "free": { "any": 1 }, "map": { "k": 2 } }))
            .expect("valid");
        assert_eq!(
            op.map(|o| o.to_string()).as_deref(),
            Some("POST /v1/things")
        );
    }

    #[test]
    fn schema_violations_are_reported_with_their_place() {
        for (body, wanted) in [
            (json!({}), "required field \"id\""),
            (json!({ "id": "ABC" }), "does not match"),
            (json!({ "id": "a", "size": -1 }), "below the minimum"),
            (
                json!({ "id": "a", "size": "1" }),
                "not of type integer or null",
            ),
            (
                json!({ "id": "a", "kind": { "b": "z" } }),
                "matches none of oneOf",
            ),
            (json!({ "id": "a", "map": { "k": "v" } }), "$.map.k"),
            (
                json!({ "id": "a", "extra": 1 }),
                "the field \"extra\" is not in the document",
            ),
            (
                json!({ "id": "a", "kind": { "a": true, "c": 1 } }),
                "$.kind: the field \"c\"",
            ),
        ] {
            let err = post(body.clone()).expect_err(&body.to_string());
            assert!(err.contains(wanted), "{body}: {err}");
            assert!(err.contains("POST /v1/things"), "{err}");
        }
    }

    #[test]
    fn statuses_content_types_and_headers_must_be_documented() {
        let d = doc();
        let err = d
            .check("POST", "/v1/things", 200, &json_headers(), b"{}")
            .expect_err("200");
        assert!(err.contains("status 200 is not documented"), "{err}");
        let coded = json!({ "error": { "code": "conflict", "message": "m" } }).to_string();
        d.check("POST", "/v1/things", 409, &json_headers(), coded.as_bytes())
            .expect("409");
        d.check("POST", "/v1/things", 503, &json_headers(), coded.as_bytes())
            .expect("default");
        let err = d
            .check("POST", "/v1/things", 503, &json_headers(), b"{}")
            .expect_err("bad error body");
        assert!(err.contains("\"error\" is missing"), "{err}");

        let mut html = HeaderMap::new();
        html.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        html.insert("keymesh-error-code", HeaderValue::from_static("x"));
        d.check("GET", "/v1/things/abc", 200, &html, b"<p>hi</p>")
            .expect("html");
        let err = d
            .check("GET", "/v1/things/abc", 200, &json_headers(), b"{}")
            .expect_err("json");
        assert!(err.contains("Content-Type \"application/json\""), "{err}");
        let err = d
            .check("GET", "/v1/things/abc", 204, &html, b"")
            .expect_err("header");
        assert!(err.contains("keymesh-error-code"), "{err}");
        let err = d
            .check("GET", "/v1/things/abc", 204, &HeaderMap::new(), b"x")
            .expect_err("body");
        assert!(err.contains("documents no body"), "{err}");
    }

    #[test]
    fn routes_match_literals_first_and_a_last_parameter_may_span_segments() {
        let d = doc();
        let op = |m: &str, p: &str| d.operation(m, p).map(|o| o.path);
        assert_eq!(
            op("GET", "/v1/things/special").as_deref(),
            Some("/v1/things/special")
        );
        assert_eq!(
            op("GET", "/v1/things/other?x=1").as_deref(),
            Some("/v1/things/{id}")
        );
        assert_eq!(
            op("GET", "/v1/files/g/a/b/c").as_deref(),
            Some("/v1/files/{group}/{path}")
        );
        assert_eq!(op("GET", "/v1/things"), None);
        assert_eq!(op("GET", "/v1/files/g"), None);
        let refused = json!({ "error": { "code": "not_found", "message": "m" } }).to_string();
        assert_eq!(
            d.check("GET", "/nowhere", 404, &json_headers(), refused.as_bytes()),
            Ok(None)
        );
        let err = d
            .check("GET", "/nowhere", 200, &json_headers(), b"{}")
            .expect_err("200");
        assert!(err.contains("undocumented route"), "{err}");
    }

    #[test]
    fn unknown_keywords_are_reported_not_skipped() {
        let errors = doc().validate(
            &json!({ "type": "string", "patternProperties": {} }),
            &json!("x"),
        );
        assert!(
            errors.iter().any(|e| e.contains("patternProperties")),
            "{errors:?}"
        );
    }
}
