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
//! Bodies are validated with the `jsonschema` crate (JSON Schema 2020-12; formats it knows are
//! asserted, OpenAPI's own such as `int64` only annotate), each response schema wrapped with a copy of the document's `components` so its `$ref`s
//! (`#/components/schemas/X`) resolve. The check is **stricter** than the document says in one
//! way: an object is closed when the schema of its place in the body declares `properties`
//! (itself or through `$ref`, `allOf`, `oneOf`, `anyOf`) and nowhere `additionalProperties`,
//! so a response field the document does not describe fails the check. `close` does that
//! before compiling, with `unevaluatedProperties: false`, which sees the properties every
//! in-place applicator evaluated (flattened `allOf` structs stay whole). A schema of
//! `type: object` without `properties` is a free-form object. An error names its place as a
//! JSON Pointer into the body (`/` for the whole body); undocumented fields of an object are
//! reported once the rest of that object validates (a failing part's fields count as
//! unevaluated too).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use http::HeaderMap;
use jsonschema::{ValidationError, Validator, error::ValidationErrorKind};
use serde_json::{Value, json};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One service's document, ready to check responses against.
#[derive(Debug, Clone)]
pub struct Conformance {
    doc: Value,
    /// The document's `components`, closed ([`close`]), for the validators' wrappers.
    components: Value,
    /// Compiled validators by the response schema's JSON text.
    validators: Arc<Mutex<HashMap<String, Arc<Validator>>>>,
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
        let mut components = doc["components"].clone();
        if let Some(schemas) = components.get_mut("schemas").and_then(Value::as_object_mut) {
            for schema in schemas.values_mut() {
                close(schema, &doc, false);
            }
        }
        Self {
            doc,
            components,
            validators: Arc::default(),
        }
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
        let response = match response.get("$ref").and_then(Value::as_str) {
            Some(reference) => reference
                .strip_prefix('#')
                .and_then(|pointer| self.doc.pointer(pointer))
                .ok_or_else(|| format!("{route}: {reference} resolves to nothing"))?,
            None => response,
        };
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

    /// Errors of `value` against `schema` (empty: it validates), each naming its place (a JSON
    /// Pointer into `value`).
    pub fn validate(&self, schema: &Value, value: &Value) -> Vec<String> {
        let validator = match self.validator(schema) {
            Ok(validator) => validator,
            Err(e) => return vec![e],
        };
        let errors: Vec<ValidationError<'_>> = validator.iter_errors(value).collect();
        let mut failed = Vec::new();
        failed_places(&errors, &mut failed);
        errors.iter().filter_map(|e| describe(e, &failed)).collect()
    }

    /// The compiled validator of a response schema of this document (closed, [`close`]).
    fn validator(&self, schema: &Value) -> Result<Arc<Validator>, String> {
        let key = schema.to_string();
        let mut cache = self
            .validators
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(validator) = cache.get(&key) {
            return Ok(Arc::clone(validator));
        }
        let mut schema = schema.clone();
        close(&mut schema, &self.doc, true);
        let wrapper = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.components,
            "allOf": [schema],
        });
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&wrapper)
            .map(Arc::new)
            .map_err(|e| format!("the schema {key} does not compile: {e}"))?;
        cache.insert(key, Arc::clone(&validator));
        Ok(validator)
    }
}

/// Close the objects of `schema` (see the module documentation): add
/// `"unevaluatedProperties": false` to each schema of an instance location — `schema` itself
/// when `root`, the values of `properties`, `items`, `prefixItems` and a schema
/// `additionalProperties` — that declares `properties` and no `additionalProperties`. Not to
/// `allOf`/`oneOf`/`anyOf` branches (nor to definitions, `root` false): they are evaluated in
/// place, and the closing keyword at the place's schema sees what they evaluated.
fn close(schema: &mut Value, doc: &Value, root: bool) {
    let Value::Object(map) = schema else {
        return;
    };
    if root && declares(map, doc, &mut HashSet::new()) == (true, false) {
        map.insert("unevaluatedProperties".into(), Value::Bool(false));
    }
    for (keyword, sub) in map.iter_mut() {
        match (keyword.as_str(), sub) {
            ("properties", Value::Object(properties)) => {
                properties.values_mut().for_each(|p| close(p, doc, true));
            }
            ("items" | "additionalProperties", sub) => close(sub, doc, true),
            ("prefixItems", Value::Array(items)) => {
                items.iter_mut().for_each(|s| close(s, doc, true));
            }
            ("allOf" | "oneOf" | "anyOf", Value::Array(branches)) => {
                branches.iter_mut().for_each(|s| close(s, doc, false));
            }
            _ => {}
        }
    }
}

/// Whether a schema, with what it applies in place (`$ref` into `doc`, `allOf`, `oneOf`,
/// `anyOf`), declares `properties` somewhere, and whether it declares `additionalProperties`
/// (or `unevaluatedProperties`) somewhere. `seen`: references followed, against cycles.
fn declares(
    schema: &serde_json::Map<String, Value>,
    doc: &Value,
    seen: &mut HashSet<String>,
) -> (bool, bool) {
    let mut found = (
        schema.contains_key("properties"),
        schema.contains_key("additionalProperties") || schema.contains_key("unevaluatedProperties"),
    );
    let target = schema
        .get("$ref")
        .and_then(Value::as_str)
        .filter(|reference| seen.insert((*reference).to_owned()))
        .and_then(|reference| doc.pointer(reference.strip_prefix('#')?));
    let branches = ["allOf", "oneOf", "anyOf"]
        .iter()
        .filter_map(|keyword| schema.get(*keyword)?.as_array())
        .flatten();
    for sub in target.into_iter().chain(branches) {
        if let Value::Object(sub) = sub {
            let (properties, additional) = declares(sub, doc, seen);
            found = (found.0 || properties, found.1 || additional);
        }
    }
    found
}

/// The places (JSON Pointers) of `errors`, those inside a failed `oneOf`/`anyOf` included, and
/// whether each is an undocumented field's (`unevaluatedProperties`).
fn failed_places<'a>(errors: &'a [ValidationError<'_>], out: &mut Vec<(&'a str, bool)>) {
    for error in errors {
        let closed = matches!(
            error.kind(),
            ValidationErrorKind::UnevaluatedProperties { .. }
        );
        out.push((error.instance_path().as_str(), closed));
        if let Some(context) = branches(error) {
            context.iter().for_each(|branch| failed_places(branch, out));
        }
    }
}

/// What each branch of a failed `oneOf`/`anyOf` found.
fn branches<'e>(error: &'e ValidationError<'_>) -> Option<&'e [Vec<ValidationError<'static>>]> {
    match error.kind() {
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            Some(context)
        }
        _ => None,
    }
}

/// One validation error: its place in the body (a JSON Pointer, `/` for the whole body) and
/// what is wrong; for a failed `oneOf`/`anyOf`, what each branch found. `None` for undocumented
/// fields of an object that also fails otherwise (another error in `failed` at its place or
/// inside it): a failing subschema's fields count as unevaluated, documented or not, so those
/// are reported once the rest of the object validates.
fn describe(error: &ValidationError<'_>, failed: &[(&str, bool)]) -> Option<String> {
    let path = error.instance_path().as_str();
    let place = if path.is_empty() { "/" } else { path };
    let mut text = match error.kind() {
        ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let inside = |f: &str| f.strip_prefix(path).is_some_and(|r| r.starts_with('/'));
            if failed
                .iter()
                .any(|&(f, closed)| inside(f) || (f == path && !closed))
            {
                return None;
            }
            let names: Vec<String> = unexpected.iter().map(|n| format!("{n:?}")).collect();
            match names.as_slice() {
                [name] => format!("{place}: the field {name} is not in the document"),
                names => format!(
                    "{place}: the fields {} are not in the document",
                    names.join(", ")
                ),
            }
        }
        _ => format!("{place}: {error}"),
    };
    for (i, branch) in branches(error).into_iter().flatten().enumerate() {
        let found: Vec<String> = branch.iter().filter_map(|e| describe(e, failed)).collect();
        text.push_str(&format!("\n    [{i}] {}", found.join("; ")));
    }
    Some(text)
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
            (json!({ "size": 1 }), "/: \"id\" is a required property"),
            (json!({ "id": "ABC" }), "/id: \"ABC\" does not match"),
            (
                json!({ "id": "a", "size": -1 }),
                "/size: -1 is less than the minimum",
            ),
            (
                json!({ "id": "a", "size": "1" }),
                "/size: \"1\" is not of types",
            ),
            (
                json!({ "id": "a", "kind": { "b": "z" } }),
                "/kind: {\"b\":\"z\"} is not valid under any of the schemas listed in the 'oneOf'",
            ),
            (
                json!({ "id": "a", "map": { "k": "v" } }),
                "/map/k: \"v\" is not of type",
            ),
            (
                json!({ "id": "a", "extra": 1 }),
                "/: the field \"extra\" is not in the document",
            ),
            (
                json!({ "id": "a", "kind": { "a": true, "c": 1 } }),
                "/kind: the field \"c\" is not in the document",
            ),
        ] {
            let err = post(body.clone()).expect_err(&body.to_string());
            assert!(err.contains(wanted), "{body}: {err}");
            assert!(err.contains("POST /v1/things"), "{err}");
            // A failing part takes its fields' evaluation away: not reported as undocumented.
            let undocumented = |text: &str| text.matches("not in the document").count();
            assert_eq!(undocumented(&err), undocumented(wanted), "{err}");
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
        assert!(err.contains("/: \"error\" is a required property"), "{err}");

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
    fn closing_follows_references_through_a_cycle() {
        let d = Conformance::new(json!({ "components": { "schemas": { "Node": {
            "type": "object", "properties": { "next": { "$ref": "#/components/schemas/Node" } }
        } } } }));
        let node = json!({ "$ref": "#/components/schemas/Node" });
        assert!(
            d.validate(&node, &json!({ "next": { "next": {} } }))
                .is_empty()
        );
        let errors = d.validate(&node, &json!({ "next": { "x": 1 } }));
        assert_eq!(errors, ["/next: the field \"x\" is not in the document"]);
    }

    #[test]
    fn format_pattern_and_enum_violations_are_caught() {
        let d = doc();
        let cases = json!([
            [{ "format": "date-time" }, "noon", "is not a \"date-time\""],
            [{ "format": "uuid" }, "nope", "is not a \"uuid\""],
            [{ "pattern": "^[0-9]+$" }, "12a", "does not match"],
            [{ "enum": ["x", "y"] }, "z", "\"z\" is not one of"]
        ]);
        for case in cases.as_array().into_iter().flatten() {
            let errors = d.validate(&case[0], &case[1]);
            let wanted = case[2].as_str().expect("wanted");
            assert!(
                errors.iter().any(|e| e.contains(wanted)),
                "{case}: {errors:?}"
            );
        }
        // An OpenAPI format that JSON Schema does not define only annotates.
        assert!(
            d.validate(&json!({ "format": "int64" }), &json!("x"))
                .is_empty()
        );
    }
}
