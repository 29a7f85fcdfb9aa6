//! The route registry: [`ApiRouter`] is the only way to add a route, and
//! every route is registered with the [`Access`] it needs. One check
//! ([`enforce`]) runs before the handler. Each area builds its routes on
//! its own state and hands back [`Routes`]; the `api` crate merges them, so
//! the full table (for the authorisation-matrix test and the OpenAPI
//! document) is the union of what the areas declared.
//!
//! ```ignore
//! pub fn routes(api: ApiRouter<CatalogueState>) -> ApiRouter<CatalogueState> {
//!     api.route(Method::POST, "/api/v1/courses", Access::Permission(Permission::ManageCourses), create)
//! }
//! ```
//!
//! The authorisation-matrix test (`api/tests/authorisation_matrix.rs`)
//! then fails until the route has a fixture there, so its expected status
//! for every role is written down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;

use crate::access::{Access, Permission, Principal};
use crate::client::is_loopback_peer;
use crate::doc::{Describe, DocHandler, Operation, Schemas};
use crate::{ApiError, ErrorCode};

/// How a critical operation's fresh step-up is proven and consumed; the
/// identity crate implements it (step-up grants live with sessions).
pub trait StepUpCheck: Send + Sync + 'static {
    fn consume<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> Pin<Box<dyn Future<Output = Result<(), ApiError>> + Send + 'a>>;
}

/// What every route's check needs besides the request: shared by all areas.
#[derive(Clone)]
pub struct Gate {
    step_up: Arc<dyn StepUpCheck>,
}

impl Gate {
    pub fn new(step_up: Arc<dyn StepUpCheck>) -> Self {
        Self { step_up }
    }
}

/// One registered route, as the authorisation-matrix test and the OpenAPI
/// document enumerate them.
#[derive(Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    /// The contract its handler's types carry.
    pub describe: Describe,
    /// What the route adds by hand (a summary; the content of a bare
    /// response).
    pub extra: Option<fn(&mut Operation)>,
}

impl std::fmt::Debug for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({:?})", self.method, self.path, self.access)
    }
}

impl RouteSpec {
    /// The operation this route documents.
    pub fn operation(&self, schemas: &mut Schemas) -> Operation {
        let mut op = Operation::default();
        (self.describe)(&mut op, schemas);
        if let Some(extra) = self.extra {
            extra(&mut op);
        }
        op
    }
}

/// A route a nested service answers: method, path, access, and what it
/// says of itself (a nested service has no typed handler to ask).
pub type NestedRoute = (Method, &'static str, Access, fn(&mut Operation));

/// A router that only accepts routes together with their [`Access`].
pub struct ApiRouter<S> {
    gate: Gate,
    router: Router<S>,
    table: Vec<RouteSpec>,
}

impl<S: Clone + Send + Sync + 'static> ApiRouter<S> {
    pub fn new(gate: Gate) -> Self {
        Self {
            gate,
            router: Router::new(),
            table: Vec::new(),
        }
    }

    pub fn route<H, T, A>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S> + DocHandler<A>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("{method} is not a routable method"));
        let endpoint = on(filter, handler);
        // A public route has nothing to check: no layer, so `/media`, the
        // origin's hot path, pays for none.
        let guarded = match access {
            Access::Public => endpoint,
            _ => endpoint.route_layer(axum::middleware::from_fn_with_state(
                (self.gate.clone(), access),
                enforce,
            )),
        };
        self.router = self.router.route(path, guarded);
        self.table.push(RouteSpec {
            method,
            path,
            access,
            describe: <H as DocHandler<A>>::describe,
            extra: None,
        });
        self
    }

    /// Adds to the contract of the route registered last: a summary, or
    /// what a handler that answers a bare response sends.
    pub fn describe(mut self, extra: fn(&mut Operation)) -> Self {
        let last = self.table.last_mut().expect("describe follows a route");
        last.extra = Some(extra);
        self
    }

    /// Mounts `service`, which routes requests under `prefix` itself (tus
    /// has its own router), declaring each route it answers. Access is
    /// decided by method; a method the table does not name is refused with
    /// 405 before the service sees it, so nothing escapes the matrix.
    pub fn nest_service(
        mut self,
        prefix: &'static str,
        routes: &[NestedRoute],
        service: Router,
    ) -> Self {
        let by_method = Nested {
            prefix,
            routes: routes
                .iter()
                .map(|(method, path, access, _)| (method.clone(), *path, *access))
                .collect(),
        };
        for (method, path, access, describe) in routes {
            assert!(
                path.starts_with(prefix),
                "{path} is not under the mount point {prefix}"
            );
            self.table.push(RouteSpec {
                method: method.clone(),
                path,
                access: *access,
                describe: |_, _| {},
                extra: Some(*describe),
            });
        }
        let guarded = service.layer(axum::middleware::from_fn_with_state(
            (self.gate.clone(), Arc::new(by_method)),
            enforce_by_method,
        ));
        self.router = self.router.nest_service(prefix, guarded);
        self
    }

    /// Every registered route with its access rule.
    pub fn table(&self) -> &[RouteSpec] {
        &self.table
    }

    /// The routes, ready to serve with `state`.
    pub fn with_state(self, state: S) -> Routes {
        Routes {
            router: self.router.with_state(state),
            table: self.table,
        }
    }
}

/// Routes of one or more areas with their table, state already applied.
#[derive(Default)]
pub struct Routes {
    router: Router,
    table: Vec<RouteSpec>,
}

impl Routes {
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    pub fn table(&self) -> &[RouteSpec] {
        &self.table
    }

    pub fn into_parts(self) -> (Router, Vec<RouteSpec>) {
        (self.router, self.table)
    }
}

/// The routes a nested service answers under its mount point, and the
/// access each needs.
struct Nested {
    prefix: &'static str,
    /// Method, declared path (a template), access.
    routes: Vec<(Method, &'static str, Access)>,
}

type AccessByMethod = Arc<Nested>;

/// The template of the route a nested service answered, in its response's
/// extensions: axum gives nested services no `MatchedPath`, and metrics
/// and traces name requests by template, never by raw path.
#[derive(Debug, Clone, Copy)]
pub struct RouteTemplate(pub &'static str);

/// [`enforce`] for a nested service, with the access its method needs.
async fn enforce_by_method(
    State((gate, table)): State<(Gate, AccessByMethod)>,
    request: Request,
    next: Next,
) -> Response {
    // The mount point itself, or a path below it (one template each way).
    let at_prefix = matches!(request.uri().path(), "" | "/");
    let method = request.method();
    let same_method = || table.routes.iter().filter(|(m, ..)| m == method);
    let route = same_method()
        .find(|(_, path, _)| (*path == table.prefix) == at_prefix)
        .or_else(|| same_method().next())
        .map(|(_, path, access)| (*path, *access));
    let Some((path, access)) = route else {
        return ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not supported here"),
        )
        .into_response();
    };
    let mut response = enforce(State((gate, access)), request, next).await;
    response.extensions_mut().insert(RouteTemplate(path));
    response
}

/// The one check of [`Access`], before any handler: 401 without a caller,
/// 403 `forbidden` without the permission, 403 `step_up_required` for a
/// critical operation without a fresh step-up of this session.
pub async fn enforce(
    State((gate, access)): State<(Gate, Access)>,
    request: Request,
    next: Next,
) -> Response {
    let principal = request.extensions().get::<Principal>().copied();
    let verdict = match (access, principal) {
        (Access::Public, _) => Ok(()),
        // Prometheus on the node itself scrapes without credentials; from
        // anywhere else, proxied requests included, /metrics needs a super admin.
        (Access::Permission(Permission::ReadMetrics), None) if is_loopback_peer(&request) => Ok(()),
        (_, None) => Err(ApiError::unauthenticated()),
        (Access::Session, Some(p)) if p.session_id().is_none() => Err(ApiError::new(
            ErrorCode::Forbidden,
            "this needs a signed-in person, not an API key",
        )),
        (Access::Session | Access::Authenticated, Some(_)) => Ok(()),
        (Access::Permission(permission), Some(p)) => {
            if !permission.granted_to(p.role) {
                Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("the {} role may not do this", p.role.as_str()),
                ))
            } else if permission.requires_step_up() {
                gate.step_up.consume(&p).await
            } else {
                Ok(())
            }
        }
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}
