//! OpenAPI documents of the services' HTTP APIs, generated from the handlers.
//!
//! A service lists its routes once, as a [`utoipa_axum::router::OpenApiRouter`] of handlers
//! annotated with `#[utoipa::path]`; the router it serves and the document it publishes both
//! come from that list, so a route cannot be served undocumented. This module holds what every
//! document shares: the health and metrics routes ([`ops`]), the security schemes, the coded
//! error responses ([`Errors`], [`ServiceErrors`], [`NodeErrors`]) and [`document`], which
//! assembles a service's document. `docs/openapi/README.md` describes the pattern.
//!
//! Security scheme names, for `security(...)` in `#[utoipa::path]`: `management_key`,
//! `feed_key`, `node_token` + `node_proof` (always together), `metrics_token`. [`problems`]
//! rejects any other name.

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

use std::collections::{BTreeMap, BTreeSet};

use utoipa::{
    IntoResponses, PartialSchema, ToSchema,
    openapi::{
        Components, ContentBuilder, Info, LicenseBuilder, OpenApi, RefOr, Response,
        ResponseBuilder, Tag,
        header::Header,
        schema::{Object, Ref, Type},
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{context::ServiceContext, error::ErrorBody, health};

/// The health and metrics routes every service serves (mounted by [`crate::http::stack`]).
pub fn ops() -> OpenApiRouter<ServiceContext> {
    OpenApiRouter::default()
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::version))
        .routes(routes!(health::metrics))
}

/// Name of the shared response for any error not listed on an operation.
const ERROR_RESPONSE: &str = "Error";

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build()
}

fn integer_header(description: &str) -> Header {
    let mut header = Header::new(Object::with_type(Type::Integer));
    header.description = Some(description.to_owned());
    header
}

/// `429 rate_limited` and the catch-all `default`: every rate-limited route answers these.
fn common_errors() -> BTreeMap<String, RefOr<Response>> {
    let mut limited =
        error_response("`rate_limited`: too many requests from this client IP or principal.");
    limited.headers.insert(
        "Retry-After".into(),
        integer_header("Seconds to wait before retrying."),
    );
    for (name, what) in [
        ("RateLimit-Limit", "The bucket's size."),
        ("RateLimit-Remaining", "Requests left in the bucket."),
        ("RateLimit-Reset", "Seconds until the bucket is full again."),
    ] {
        limited.headers.insert(name.into(), integer_header(what));
    }
    BTreeMap::from([
        ("429".to_owned(), limited.into()),
        (
            "default".to_owned(),
            Ref::from_response_name(ERROR_RESPONSE).into(),
        ),
    ])
}

/// Errors of a route anyone may call: `429` and the coded `default`.
#[derive(Debug)]
pub struct Errors;

impl IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        common_errors()
    }
}

/// Errors of a route for a service credential (`management_key`, `feed_key`): `401
/// unauthorized` besides [`Errors`].
#[derive(Debug)]
pub struct ServiceErrors;

impl IntoResponses for ServiceErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = common_errors();
        responses.insert(
            "401".into(),
            error_response("`unauthorized`: no valid service credential.").into(),
        );
        responses
    }
}

/// Errors of a node's route (`node_token` + `node_proof`): the token and proof codes (`401`)
/// besides [`Errors`].
#[derive(Debug)]
pub struct NodeErrors;

impl IntoResponses for NodeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = common_errors();
        responses.insert(
            "401".into(),
            error_response(
                "`invalid_token`, `token_expired`, `revoked`: the token is malformed, unknown, \
                 expired or revoked. `proof_required`, `proof_invalid`, `proof_replayed`: the \
                 `Keymesh-Proof` header is missing, does not verify or was used before.",
            )
            .into(),
        );
        responses
    }
}

/// Errors of a route for a signed-in user (`session`, or `session_cookie` + `csrf`): `401
/// unauthorized` / `reauthentication_required` and `403 forbidden` / `csrf_failed` besides
/// [`Errors`].
#[derive(Debug)]
pub struct SessionErrors;

impl IntoResponses for SessionErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = common_errors();
        responses.insert(
            "401".into(),
            error_response(
                "`unauthorized`: no live session. `reauthentication_required`: an admin action \
                 needs a sign-in younger than `MANAGEMENT_REAUTH_SECS`.",
            )
            .into(),
        );
        responses.insert(
            "403".into(),
            error_response(
                "`forbidden`: the caller's role does not allow this. `csrf_failed`: a cookie \
                 session's change without its `X-CSRF-Token` or from another origin.",
            )
            .into(),
        );
        responses
    }
}

/// Every security scheme a document may name, with what it is.
fn security_schemes() -> [(&'static str, SecurityScheme); 8] {
    let bearer = |description: &str| {
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description))
                .build(),
        )
    };
    [
        (
            "management_key",
            bearer(
                "The management server's credential (`MANAGEMENT_API_KEY`), compared in constant \
                 time.",
            ),
        ),
        (
            "feed_key",
            bearer(
                "The revocation feed's credential (`VAULT_FEED_API_KEY`) of relays and vault \
                 replicas; the management credential is accepted too.",
            ),
        ),
        (
            "node_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("Biscuit, URL-safe base64")
                    .description(Some(
                        "The node's capability token (docs/protocol/tokens.md), URL-safe base64 \
                         with or without padding. Always sent with `Keymesh-Proof`.",
                    ))
                    .build(),
            ),
        ),
        (
            "node_proof",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Keymesh-Proof",
                "Proof of possession: `v1;ts=<unix seconds>;nonce=<base64url>;sig=<base64url>`, \
                 the node key's Ed25519 signature over method, path and query, body and token \
                 (docs/protocol/tokens.md). Each proof is accepted once, within 60 s of `ts`.",
            ))),
        ),
        (
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("kms_ session token")
                    .description(Some(
                        "A management session token for the desktop app and API clients \
                         (docs/management.md, Sessions); never accepted as a cookie.",
                    ))
                    .build(),
            ),
        ),
        (
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-keymesh_session",
                "A browser session: `HttpOnly; Secure; SameSite=Strict`. State changes also need \
                 `X-CSRF-Token` (`GET /v1/session` gives it) and our origin.",
            ))),
        ),
        (
            "csrf",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The cookie session's CSRF token, required on every state change made with \
                 the session cookie.",
            ))),
        ),
        (
            "metrics_token",
            bearer("`METRICS_TOKEN`, when one is configured; otherwise `/metrics` is open."),
        ),
    ]
}

/// A service's document: `api` (its router's document) plus the health and metrics routes,
/// the error schemas and responses, the security schemes its operations name, and `info`.
/// Path templates are written for axum; a catch-all `{*name}` is published as `{name}`.
pub fn document(
    title: &str,
    version: &str,
    description: &str,
    tags: &[(&str, &str)],
    api: OpenApi,
) -> OpenApi {
    let mut doc = OpenApi::default();
    let mut info = Info::new(title, version);
    info.description = Some(description.to_owned());
    info.license = Some(
        LicenseBuilder::new()
            .name("Apache-2.0")
            .identifier(Some("Apache-2.0"))
            .build(),
    );
    doc.info = info;
    doc.merge(api);
    doc.merge(ops().into_openapi());
    doc.paths.paths = std::mem::take(&mut doc.paths.paths)
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    for item in doc.paths.paths.values_mut() {
        let methods = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in methods.into_iter().flatten() {
            for text in [&mut operation.summary, &mut operation.description]
                .into_iter()
                .flatten()
            {
                *text = unwrap_lines(text);
            }
        }
    }

    let components = doc.components.get_or_insert_with(Components::new);
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    let mut nested = Vec::new();
    <ErrorBody as ToSchema>::schemas(&mut nested);
    components.schemas.extend(nested);
    components.responses.insert(
        ERROR_RESPONSE.into(),
        error_response(
            "Any other error, with its stable code (docs/errors.md): `malformed_request` (400), \
             `invalid_request` (422), `payload_too_large` (413), `unsupported_media_type` (415), \
             `audit_unavailable`, `timeout`, `unavailable` (503), `internal` (500), …",
        )
        .into(),
    );
    let named = security_names(&doc);
    let components = doc.components.get_or_insert_with(Components::new);
    for (name, scheme) in security_schemes() {
        if named.contains(name) {
            components.security_schemes.insert(name.into(), scheme);
        }
    }
    doc.tags = Some(
        tags.iter()
            .map(|(name, what)| {
                let mut tag = Tag::new(*name);
                tag.description = Some((*what).to_owned());
                tag
            })
            .chain(std::iter::once({
                let mut tag = Tag::new("operations");
                tag.description = Some("Health and metrics, common to every service.".into());
                tag
            }))
            .collect(),
    );
    doc
}

/// Doc comments are wrapped at 100 columns: join each paragraph's lines into one.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Every security scheme name the document's operations require.
fn security_names(doc: &OpenApi) -> BTreeSet<String> {
    let json = serde_json::to_value(&doc.paths).unwrap_or_default();
    let mut names = BTreeSet::new();
    for operation in operations(&json) {
        for requirement in operation.1["security"].as_array().into_iter().flatten() {
            if let Some(object) = requirement.as_object() {
                names.extend(object.keys().cloned());
            }
        }
    }
    names
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `(path and method, operation)` of every operation in a serialized `paths` object.
fn operations(paths: &serde_json::Value) -> Vec<(String, &serde_json::Value)> {
    let mut out = Vec::new();
    for (path, item) in paths.as_object().into_iter().flatten() {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                out.push((format!("{} {path}", method.to_uppercase()), operation));
            }
        }
    }
    out
}

/// What is wrong with a document, for a test to assert empty: references that resolve to
/// nothing, path parameters not declared (or declared but not in the path), duplicate
/// operation ids, operations without a summary, tag or success response, unknown security
/// schemes, rustdoc links (``[`Type`]``) in descriptions taken from doc comments.
pub fn problems(doc: &OpenApi) -> Vec<String> {
    let json = match serde_json::to_value(doc) {
        Ok(json) => json,
        Err(e) => return vec![format!("the document does not serialize: {e}")],
    };
    let mut problems = Vec::new();
    let mut refs = Vec::new();
    let mut texts = Vec::new();
    collect(&json, &mut refs, &mut texts);
    for text in texts {
        if text.split("[`").skip(1).any(|rest| {
            rest.split_once("`]")
                .is_some_and(|(_, after)| !after.starts_with('('))
        }) {
            problems.push(format!("a rustdoc link in a description: {text:?}"));
        }
    }
    for reference in refs {
        let found = reference
            .strip_prefix("#/")
            .map(|pointer| json.pointer(&format!("/{pointer}")).is_some())
            .unwrap_or(false);
        if !found {
            problems.push(format!("{reference} resolves to nothing"));
        }
    }
    let schemes: BTreeSet<&str> = json["components"]["securitySchemes"]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut ids = BTreeSet::new();
    for (route, operation) in operations(&json["paths"]) {
        let path = route.split_once(' ').map_or("", |(_, p)| p);
        let in_template: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
            .collect();
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        if in_template != declared {
            problems.push(format!(
                "{route}: path parameters {in_template:?} but declared {declared:?}"
            ));
        }
        match operation["operationId"].as_str() {
            Some(id) if !ids.insert(id.to_owned()) => {
                problems.push(format!("{route}: operationId {id} is used twice"));
            }
            None => problems.push(format!("{route}: no operationId")),
            Some(_) => {}
        }
        if operation["summary"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{route}: no summary"));
        }
        if operation["tags"].as_array().is_none_or(Vec::is_empty) {
            problems.push(format!("{route}: no tag"));
        }
        let succeeds = operation["responses"]
            .as_object()
            .is_some_and(|r| r.keys().any(|s| s.starts_with('2') || s == "101"));
        if !succeeds {
            problems.push(format!("{route}: no success response"));
        }
        for requirement in operation["security"].as_array().into_iter().flatten() {
            for name in requirement
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                if !schemes.contains(name.as_str()) {
                    problems.push(format!("{route}: unknown security scheme {name}"));
                }
            }
        }
    }
    problems
}

/// Every `$ref`, and every description and summary, in `value`.
fn collect<'a>(value: &'a serde_json::Value, refs: &mut Vec<&'a str>, texts: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", serde_json::Value::String(r)) => refs.push(r),
                    ("description" | "summary", serde_json::Value::String(t)) => texts.push(t),
                    _ => collect(v, refs, texts),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, refs, texts)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operations_document_is_complete() {
        let doc = document("test", "0", "test", &[], OpenApi::default());
        assert_eq!(problems(&doc), Vec::<String>::new());
        let json = doc.to_json().expect("json");
        for path in ["/health/live", "/health/ready", "/metrics"] {
            assert!(json.contains(path), "{path} missing");
        }
        assert!(json.contains("metrics_token"));
        assert!(!json.contains("node_proof"), "unused schemes are left out");
    }

    #[test]
    fn problems_finds_dangling_refs_and_undeclared_path_parameters() {
        let mut doc = document("test", "0", "test", &[], OpenApi::default());
        let mut live = doc.paths.paths.remove("/health/live").expect("live");
        if let Some(get) = live.get.as_mut() {
            get.description = Some("Like [`Live`].".into());
        }
        doc.paths.paths.insert("/health/{what}".into(), live);
        if let Some(components) = doc.components.as_mut() {
            components.schemas.remove("ErrorBody");
        }
        let found = problems(&doc).join("\n");
        assert!(
            found.contains("#/components/schemas/ErrorBody resolves to nothing"),
            "{found}"
        );
        assert!(
            found.contains("GET /health/{what}: path parameters"),
            "{found}"
        );
        assert!(found.contains("a rustdoc link in a description"), "{found}");
    }
}
