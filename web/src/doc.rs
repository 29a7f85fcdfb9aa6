//! The API contract, derived from the handlers' own types: a route's
//! request body, query and path parameters come from its extractors
//! ([`ApiJson`], [`ApiQuery`], [`ApiPath`]), its success responses from
//! its return type ([`Json`], [`Created`], [`Accepted`], [`NoContent`]),
//! and every schema from `schemars` derives on those types. The route
//! registry keeps one [`Describe`] per route, and the `api` crate renders
//! the OpenAPI 3.1 document from the whole table — so the document cannot
//! drift from the code, and a handler whose types say nothing (a bare
//! `Response`) shows up as [`Operation::undocumented`], which the contract
//! test refuses unless the route describes itself
//! ([`crate::ApiRouter::describe`]).

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};

use crate::{ApiError, ApiJson, ApiPath, ApiQuery};

/// The two schema generators of one document: requests are described as
/// they are read (`Deserialize`), responses as they are written
/// (`Serialize`), both with definitions under `#/components/schemas`.
pub struct Schemas {
    pub requests: SchemaGenerator,
    pub responses: SchemaGenerator,
}

impl Default for Schemas {
    fn default() -> Self {
        let settings = || {
            SchemaSettings::draft2020_12().with(|s| {
                s.definitions_path = "/components/schemas".into();
            })
        };
        Self {
            requests: SchemaGenerator::new(settings().for_deserialize()),
            responses: SchemaGenerator::new(settings().for_serialize()),
        }
    }
}

/// One response of an operation.
#[derive(Debug, Clone)]
pub struct ResponseDoc {
    pub description: String,
    /// Content type and schema; `None` for an empty body.
    pub content: Option<(&'static str, Schema)>,
}

/// What one route says about itself.
#[derive(Debug, Clone, Default)]
pub struct Operation {
    pub summary: Option<&'static str>,
    pub request: Option<(&'static str, Schema)>,
    /// The query string as one object schema (its properties become
    /// parameters).
    pub query: Option<Schema>,
    /// The path parameters' schema: one value, a tuple, or an object.
    pub path: Option<Schema>,
    pub responses: BTreeMap<u16, ResponseDoc>,
    /// The handler answers with a bare response whose contract its types
    /// do not carry; the route must [`describe`](crate::ApiRouter::describe)
    /// it.
    pub undocumented: bool,
    /// Whether errors are the JSON [`crate::error::ErrorBody`].
    pub errors: bool,
}

impl Operation {
    pub fn response(
        &mut self,
        status: u16,
        description: impl Into<String>,
        content: Option<(&'static str, Schema)>,
    ) -> &mut Self {
        self.responses.insert(
            status,
            ResponseDoc {
                description: description.into(),
                content,
            },
        );
        self.undocumented = false;
        self
    }

    /// A success response of `content_type` whose body is not JSON
    /// (media, CSV, HTML, Prometheus text): described by its type only.
    pub fn raw(&mut self, status: u16, content_type: &'static str, description: &str) -> &mut Self {
        let schema = schemars::json_schema!({ "type": "string", "contentMediaType": content_type });
        self.response(status, description, Some((content_type, schema)))
    }
}

/// How a route's contract is computed when the document is rendered.
pub type Describe = fn(&mut Operation, &mut Schemas);

/// An extractor's share of the contract.
pub trait DocInput {
    fn describe(_op: &mut Operation, _schemas: &mut Schemas) {}
}

/// A return type's share of the contract.
pub trait DocOutput {
    fn describe(op: &mut Operation, schemas: &mut Schemas);
}

/// Implemented for every handler whose arguments are [`DocInput`]s and
/// whose output is a [`DocOutput`].
pub trait DocHandler<Args> {
    fn describe(op: &mut Operation, schemas: &mut Schemas);
}

macro_rules! doc_handler {
    ($($arg:ident),*) => {
        impl<F, Fut, $($arg,)*> DocHandler<($($arg,)*)> for F
        where
            F: FnOnce($($arg),*) -> Fut,
            Fut: std::future::Future,
            Fut::Output: DocOutput,
            $($arg: DocInput,)*
        {
            fn describe(op: &mut Operation, schemas: &mut Schemas) {
                $(<$arg as DocInput>::describe(op, schemas);)*
                <Fut::Output as DocOutput>::describe(op, schemas);
            }
        }
    };
}

doc_handler!();
doc_handler!(T1);
doc_handler!(T1, T2);
doc_handler!(T1, T2, T3);
doc_handler!(T1, T2, T3, T4);
doc_handler!(T1, T2, T3, T4, T5);
doc_handler!(T1, T2, T3, T4, T5, T6);
doc_handler!(T1, T2, T3, T4, T5, T6, T7);
doc_handler!(T1, T2, T3, T4, T5, T6, T7, T8);

// --- inputs -----------------------------------------------------------------

impl<T: JsonSchema> DocInput for ApiJson<T> {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        op.request = Some(("application/json", schemas.requests.subschema_for::<T>()));
    }
}

impl<T: JsonSchema> DocInput for ApiQuery<T> {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        op.query = Some(inline::<T>(&mut schemas.requests));
    }
}

impl<T: JsonSchema> DocInput for ApiPath<T> {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        op.path = Some(inline::<T>(&mut schemas.requests));
    }
}

/// `T`'s own schema, not a `$ref` (parameters are listed one by one).
fn inline<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    T::json_schema(generator)
}

/// Extractors that carry no contract of their own (state, the caller,
/// headers, the raw query or body).
macro_rules! silent_input {
    ($($t:ty),* $(,)?) => { $( impl DocInput for $t {} )* };
}

silent_input!(
    crate::Principal,
    crate::ClientContext,
    axum::http::HeaderMap,
    axum::http::Method,
    axum::http::Uri,
    axum::extract::RawQuery,
    axum::body::Body,
    axum::body::Bytes,
    axum::extract::Request,
);

impl<S> DocInput for axum::extract::State<S> {}
impl<T> DocInput for axum::extract::ConnectInfo<T> {}
impl<T> DocInput for Option<T> where T: DocInput {}

/// A handler that wants to answer a malformed body itself still reads it.
impl<T: DocInput> DocInput for Result<T, ApiError> {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        T::describe(op, schemas);
    }
}

// --- outputs ----------------------------------------------------------------

impl<T: JsonSchema> DocOutput for Json<T> {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        let schema = schemas.responses.subschema_for::<T>();
        op.response(200, "success", Some(("application/json", schema)));
    }
}

impl<T: DocOutput> DocOutput for Result<T, ApiError> {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        T::describe(op, schemas);
        op.errors = true;
    }
}

/// A bare response says nothing; the route must describe it.
impl DocOutput for Response {
    fn describe(op: &mut Operation, _: &mut Schemas) {
        if op.responses.is_empty() {
            op.undocumented = true;
        }
    }
}

/// A status chosen at run time says nothing of which; the route must
/// describe it (or return [`Created`], [`Accepted`], [`NoContent`]).
impl<T> DocOutput for (StatusCode, Json<T>) {
    fn describe(op: &mut Operation, _: &mut Schemas) {
        if op.responses.is_empty() {
            op.undocumented = true;
        }
    }
}

impl DocOutput for StatusCode {
    fn describe(op: &mut Operation, _: &mut Schemas) {
        if op.responses.is_empty() {
            op.undocumented = true;
        }
    }
}

impl DocOutput for ApiError {
    fn describe(op: &mut Operation, _: &mut Schemas) {
        op.errors = true;
    }
}

/// `201 Created` with the new resource, and its `Location` when known.
pub struct Created<T>(pub T, pub Option<String>);

impl<T> Created<T> {
    pub fn new(body: T) -> Self {
        Created(body, None)
    }

    pub fn at(location: impl Into<String>, body: T) -> Self {
        Created(body, Some(location.into()))
    }
}

impl<T: serde::Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        with_location(StatusCode::CREATED, self.0, self.1)
    }
}

impl<T: JsonSchema> DocOutput for Created<T> {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        let schema = schemas.responses.subschema_for::<T>();
        op.response(201, "created", Some(("application/json", schema)));
    }
}

/// `202 Accepted`: the work continues in the background; poll `Location`.
pub struct Accepted<T>(pub T, pub Option<String>);

impl<T: serde::Serialize> IntoResponse for Accepted<T> {
    fn into_response(self) -> Response {
        with_location(StatusCode::ACCEPTED, self.0, self.1)
    }
}

impl<T: JsonSchema> DocOutput for Accepted<T> {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        let schema = schemas.responses.subschema_for::<T>();
        op.response(
            202,
            "accepted; poll Location",
            Some(("application/json", schema)),
        );
    }
}

fn with_location<T: serde::Serialize>(
    status: StatusCode,
    body: T,
    location: Option<String>,
) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Some(value) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, value);
    }
    response
}

/// `204 No Content`.
pub struct NoContent;

impl IntoResponse for NoContent {
    fn into_response(self) -> Response {
        StatusCode::NO_CONTENT.into_response()
    }
}

impl DocOutput for NoContent {
    fn describe(op: &mut Operation, _: &mut Schemas) {
        op.response(204, "done", None);
    }
}
