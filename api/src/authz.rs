//! Authorisation, in one place: the roles, the permissions, the one table
//! that says which role holds which permission, and [`ApiRouter`], the only
//! way to add a route — every route is registered with the [`Access`] it
//! needs and one middleware ([`enforce`]) checks it before the handler runs.
//! No handler checks a role by hand; handlers scope their queries to the
//! caller's organisation (`Principal::org_scope`) so another organisation's
//! resources answer 404, never revealing that they exist.
//!
//! Adding routes (for the asset/pipeline/catalogue work to come):
//!
//! ```ignore
//! pub fn routes(api: ApiRouter) -> ApiRouter {
//!     api.route(Method::POST, "/api/v1/uploads", Access::Permission(Permission::UploadMedia), create_upload)
//! }
//! ```
//!
//! and call it from `crate::api`. The authorisation-matrix test
//! (`api/tests/authorisation_matrix.rs`) then fails until the route has a
//! fixture there, so its expected status for every role is written down.

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use uuid::Uuid;

use crate::{ApiError, AppState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Learner,
    Expert,
    Partner,
    ContentAdmin,
    SuperAdmin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Learner,
        Role::Expert,
        Role::Partner,
        Role::ContentAdmin,
        Role::SuperAdmin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Learner => "learner",
            Role::Expert => "expert",
            Role::Partner => "partner",
            Role::ContentAdmin => "content_admin",
            Role::SuperAdmin => "super_admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Self, ApiError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_role",
                format!("{s:?} is not a role; expected learner, expert, partner, content_admin or super_admin"),
            )
        })
    }
}

/// What a route needs its caller to be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Bring a source in: tus uploads and URL pulls.
    UploadMedia,
    /// Read assets' status, progress and events; manage webhooks.
    ReadAssets,
    /// Create, list and disable the organisation's webhooks.
    ManageWebhooks,
    /// How an asset is delivered: HLS AES-128 encryption on or off.
    ManageAssets,
    /// The pipeline's per-asset event log (workers, attempts): operators.
    ReadPipelineEvents,
    /// How delivery performs for the organisation's learners (QoE
    /// summaries: startup time, rebuffering, switches, fatal errors).
    ReadPlaybackQuality,
    /// Draft courses: create, edit drafts, chapters, lessons, order, submit
    /// for review, take back to draft.
    ManageCourses,
    /// Publish (approve a review or relist) and unpublish courses.
    PublishCourses,
    /// The organisation's disciplines and expert profiles.
    ManageCatalogue,
    /// Rate published courses.
    RateCourses,
    DeleteCourses,
    ListUsers,
    InviteExperts,
    ChangeRoles,
    DeleteUsers,
    ExportPersonalData,
    ReadAudit,
    ReadMetrics,
}

impl Permission {
    /// THE permission matrix: which roles hold each permission. A super
    /// admin of an organisation holds it within that organisation; a global
    /// super admin (no organisation) everywhere.
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Permission::UploadMedia
            | Permission::ReadAssets
            | Permission::ManageWebhooks
            | Permission::ManageAssets => &[Partner, ContentAdmin, SuperAdmin],
            Permission::ManageCourses => &[Expert, ContentAdmin, SuperAdmin],
            Permission::RateCourses => &[Learner],
            Permission::ReadPipelineEvents
            | Permission::ReadPlaybackQuality
            | Permission::PublishCourses
            | Permission::ManageCatalogue
            | Permission::DeleteCourses
            | Permission::ListUsers
            | Permission::InviteExperts => &[ContentAdmin, SuperAdmin],
            Permission::ChangeRoles
            | Permission::DeleteUsers
            | Permission::ExportPersonalData
            | Permission::ReadAudit
            | Permission::ReadMetrics => &[SuperAdmin],
        }
    }

    /// Critical operations need a fresh step-up of the same session
    /// (TOTP or a one-time code), consumed by the one request it allows.
    pub fn requires_step_up(self) -> bool {
        matches!(
            self,
            Permission::ChangeRoles
                | Permission::DeleteUsers
                | Permission::DeleteCourses
                | Permission::ExportPersonalData
        )
    }

    pub fn granted_to(self, role: Role) -> bool {
        self.roles().contains(&role)
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// A signed-in person (a session), not a partner API key.
    Session,
    /// Any caller that authenticated, by session or API key.
    Authenticated,
    /// A caller whose role holds the permission.
    Permission(Permission),
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Session { user_id: Uuid, session_id: Uuid },
    PartnerKey { key_id: Uuid },
}

/// The authenticated caller, put in the request by the identity middleware.
/// As an extractor it answers 401 when the request has no caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub credential: Credential,
    /// `None` for a global super admin.
    pub org_id: Option<Uuid>,
    pub role: Role,
}

impl Principal {
    /// The organisation the caller's queries are limited to; `None` means
    /// every organisation (a global super admin).
    pub fn org_scope(&self) -> Option<Uuid> {
        self.org_id
    }

    pub fn user_id(&self) -> Option<Uuid> {
        match self.credential {
            Credential::Session { user_id, .. } => Some(user_id),
            Credential::PartnerKey { .. } => None,
        }
    }

    pub fn session_id(&self) -> Option<Uuid> {
        match self.credential {
            Credential::Session { session_id, .. } => Some(session_id),
            Credential::PartnerKey { .. } => None,
        }
    }

    /// The organisation something new is created in: the caller's own
    /// (naming it is allowed), or for a global super admin the one named.
    /// Naming another organisation answers 404, as if it did not exist.
    pub fn target_org(&self, named: Option<Uuid>) -> Result<Uuid, ApiError> {
        match (self.org_id, named) {
            (Some(own), None) => Ok(own),
            (Some(own), Some(named)) if named == own => Ok(own),
            (Some(_), Some(named)) => Err(ApiError::not_found(format!("no organisation {named}"))),
            (None, Some(named)) => Ok(named),
            (None, None) => Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "org_required",
                "a global super admin must say which organisation this belongs to (org_id)",
            )),
        }
    }

    /// `user:<id>` or `key:<id>`, as the audit log names actors.
    pub fn actor(&self) -> String {
        match self.credential {
            Credential::Session { user_id, .. } => format!("user:{user_id}"),
            Credential::PartnerKey { key_id } => format!("key:{key_id}"),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .copied()
            .ok_or_else(ApiError::unauthenticated)
    }
}

/// One registered route, as the authorisation-matrix test enumerates them.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// A router that only accepts routes together with their [`Access`].
pub struct ApiRouter {
    state: AppState,
    router: Router<AppState>,
    table: Vec<RouteSpec>,
}

impl ApiRouter {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            router: Router::new(),
            table: Vec::new(),
        }
    }

    pub fn route<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("{method} is not a routable method"));
        let guarded = on(filter, handler).route_layer(axum::middleware::from_fn_with_state(
            (self.state.clone(), access),
            enforce,
        ));
        self.router = self.router.route(path, guarded);
        self.table.push(RouteSpec {
            method,
            path,
            access,
        });
        self
    }

    /// Mounts `service`, which routes requests under `prefix` itself (tus
    /// has its own router), declaring each route it answers. Access is
    /// decided by method; a method the table does not name is refused with
    /// 405 before the service sees it, so nothing escapes the matrix.
    pub fn nest_service(
        mut self,
        prefix: &'static str,
        routes: &[(Method, &'static str, Access)],
        service: Router,
    ) -> Self {
        let by_method: Vec<(Method, Access)> = routes
            .iter()
            .map(|(method, _, access)| (method.clone(), *access))
            .collect();
        for (method, path, access) in routes {
            assert!(
                path.starts_with(prefix),
                "{path} is not under the mount point {prefix}"
            );
            self.table.push(RouteSpec {
                method: method.clone(),
                path,
                access: *access,
            });
        }
        let guarded = service.layer(axum::middleware::from_fn_with_state(
            (self.state.clone(), by_method),
            enforce_by_method,
        ));
        self.router = self.router.nest_service(prefix, guarded);
        self
    }

    /// The state routes will run with (for areas that build their own).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Every registered route with its access rule.
    pub fn table(&self) -> &[RouteSpec] {
        &self.table
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

/// [`enforce`] for a nested service, with the access its method needs.
async fn enforce_by_method(
    State((state, table)): State<(AppState, Vec<(Method, Access)>)>,
    request: Request,
    next: Next,
) -> Response {
    match table.iter().find(|(m, _)| m == request.method()) {
        Some((_, access)) => enforce(State((state, *access)), request, next).await,
        None => ApiError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not supported here", request.method()),
        )
        .into_response(),
    }
}

/// The one check of [`Access`], before any handler: 401 without a caller,
/// 403 `forbidden` without the permission, 403 `step_up_required` for a
/// critical operation without a fresh step-up of this session.
pub async fn enforce(
    State((state, access)): State<(AppState, Access)>,
    request: Request,
    next: Next,
) -> Response {
    let principal = request.extensions().get::<Principal>().copied();
    let verdict = match (access, principal) {
        (Access::Public, _) => Ok(()),
        // Prometheus on the node itself scrapes without credentials; from
        // anywhere else, proxied requests included, /metrics needs a super admin.
        (Access::Permission(Permission::ReadMetrics), None)
            if crate::identity::is_loopback_peer(&request) =>
        {
            Ok(())
        }
        (_, None) => Err(ApiError::unauthenticated()),
        (Access::Session, Some(p)) if p.session_id().is_none() => Err(ApiError::forbidden(
            "forbidden",
            "this needs a signed-in person, not an API key",
        )),
        (Access::Session | Access::Authenticated, Some(_)) => Ok(()),
        (Access::Permission(permission), Some(p)) => {
            if !permission.granted_to(p.role) {
                Err(ApiError::forbidden(
                    "forbidden",
                    format!("the {} role may not do this", p.role.as_str()),
                ))
            } else if permission.requires_step_up() {
                crate::identity::stepup::consume_grant(&state, &p).await
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
