//! The route table: which app answers a public path, the path that app sees, and who may write.

use axum::http::Method;
use kit::extract::{AuthUser, Role};
use kit::settings::SettingsError;

use crate::settings::RouteSettings;

/// Paths the gateway answers itself; no route may take them.
pub const RESERVED_PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/openapi.json",
    "/api/docs",
];

/// A Dapr app id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(String);

impl AppId {
    /// Letters, digits, `-` and `_`; no dots (Dapr reads `app.namespace`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "{text:?} may hold only letters, digits, `-` and `_`, not {bad:?}"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AppId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path prefix: empty, or `/segment/segment` with plain segments and no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix(String);

impl PathPrefix {
    /// Parses a prefix; `allow_empty` for upstream prefixes, where empty strips the prefix.
    pub fn parse(text: &str, allow_empty: bool) -> Result<Self, String> {
        if text.is_empty() {
            return if allow_empty {
                Ok(Self(String::new()))
            } else {
                Err("must not be empty".into())
            };
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("{text:?} must start with `/`"));
        };
        for segment in rest.split('/') {
            if segment.is_empty() {
                return Err(format!(
                    "{text:?} must not end with `/` or hold empty segments"
                ));
            }
            if segment == "." || segment == ".." {
                return Err(format!("{text:?} must not hold `.` or `..` segments"));
            }
            if let Some(bad) = segment
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')))
            {
                return Err(format!(
                    "{text:?} may hold only letters, digits, `-`, `_`, `.` and `~` between slashes, not {bad:?}"
                ));
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What follows the prefix in `path` (empty or starting with `/`), if `path` is under it.
    fn strip<'a>(&self, path: &'a str) -> Option<&'a str> {
        let rest = path.strip_prefix(self.0.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

/// One parsed route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Public prefix.
    pub prefix: PathPrefix,
    /// The app behind it.
    pub app_id: AppId,
    /// What the app sees instead of the prefix.
    pub upstream_prefix: PathPrefix,
    /// Role needed for writes.
    pub write_role: Option<Role>,
}

/// Why a caller may not use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// A token is needed.
    #[error("sign in to do this")]
    SignInRequired,
    /// The caller's role is not enough.
    #[error("this needs the {} role", .0.as_str())]
    RoleRequired(Role),
}

impl Route {
    /// Whether `caller` may send `method` here: writes may need a role, the rest is the app's
    /// decision.
    pub fn authorize(&self, method: &Method, caller: Option<&AuthUser>) -> Result<(), AccessError> {
        let Some(role) = self.write_role else {
            return Ok(());
        };
        let is_write = [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method);
        if !is_write {
            return Ok(());
        }
        match caller {
            None => Err(AccessError::SignInRequired),
            Some(user) if user.role == role => Ok(()),
            Some(_) => Err(AccessError::RoleRequired(role)),
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The matching route.
    pub route: &'a Route,
    /// Path and query the app sees (`/products/42?full=true`).
    pub path_and_query: String,
}

/// Why a path cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No route takes it.
    #[error("no API route matches this path")]
    NotFound,
    /// It would leave its app's prefix once decoded (`..`, `%2F`, `\`).
    #[error("the path holds `.` or `..` segments, encoded slashes or backslashes")]
    UnsafePath,
}

/// Every route, longest prefix first, and the app paths never forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    routes: Vec<Route>,
    apps: Vec<AppId>,
    internal: Vec<PathPrefix>,
}

impl RouteTable {
    /// Parses the settings; errors name the setting (`gateway.routes[2].prefix`). Paths of the
    /// apps under `internal` (`/metrics`, `/events`...) are never forwarded.
    pub fn parse(settings: &[RouteSettings], internal: &[String]) -> Result<Self, SettingsError> {
        if settings.is_empty() {
            return Err(SettingsError::new(
                "gateway.routes",
                "must list at least one route",
            ));
        }
        let mut routes: Vec<Route> = Vec::with_capacity(settings.len());
        for (index, route) in settings.iter().enumerate() {
            let key = |field: &str| format!("gateway.routes[{index}].{field}");
            let prefix = PathPrefix::parse(&route.prefix, false)
                .map_err(|e| SettingsError::new(key("prefix"), e))?;
            if RESERVED_PATHS.contains(&prefix.as_str()) {
                return Err(SettingsError::new(
                    key("prefix"),
                    format!("{} is served by the gateway itself", prefix.as_str()),
                ));
            }
            if routes.iter().any(|r| r.prefix == prefix) {
                return Err(SettingsError::new(
                    key("prefix"),
                    format!("{} is listed twice", prefix.as_str()),
                ));
            }
            routes.push(Route {
                prefix,
                app_id: AppId::parse(&route.app_id)
                    .map_err(|e| SettingsError::new(key("app_id"), e))?,
                upstream_prefix: PathPrefix::parse(&route.upstream_prefix, true)
                    .map_err(|e| SettingsError::new(key("upstream_prefix"), e))?,
                write_role: route.write_role,
            });
        }
        let mut apps: Vec<AppId> = Vec::new();
        for route in &routes {
            if !apps.contains(&route.app_id) {
                apps.push(route.app_id.clone());
            }
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.as_str().len()));
        let internal = internal
            .iter()
            .enumerate()
            .map(|(index, path)| {
                PathPrefix::parse(path, false)
                    .map_err(|e| SettingsError::new(format!("gateway.internal_paths[{index}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            routes,
            apps,
            internal,
        })
    }

    /// The routes, longest prefix first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The distinct apps, in the order the settings list them.
    pub fn apps(&self) -> &[AppId] {
        &self.apps
    }

    /// The route for a public `path` and the path its app sees.
    pub fn resolve(&self, path: &str, query: Option<&str>) -> Result<Target<'_>, RouteError> {
        let (route, rest) = self
            .routes
            .iter()
            .find_map(|route| route.prefix.strip(path).map(|rest| (route, rest)))
            .ok_or(RouteError::NotFound)?;
        if !is_safe(rest) {
            return Err(RouteError::UnsafePath);
        }
        let mut path_and_query = format!("{}{rest}", route.upstream_prefix.as_str());
        if path_and_query.is_empty() {
            path_and_query.push('/');
        }
        if self.is_internal(&path_and_query) {
            return Err(RouteError::NotFound);
        }
        if let Some(query) = query {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        Ok(Target {
            route,
            path_and_query,
        })
    }

    /// Whether the app path `path` is one the gateway never forwards. The app sees the path
    /// percent-decoded (the sidecar decodes it), so that is what is compared.
    fn is_internal(&self, path: &str) -> bool {
        let decoded = percent_decode(path);
        let decoded = String::from_utf8_lossy(&decoded);
        self.internal
            .iter()
            .any(|internal| internal.strip(&decoded).is_some())
    }

    /// The public form of `path` as app `app_id` documents it, if the gateway routes it there.
    pub fn public_path(&self, app_id: &AppId, path: &str) -> Option<String> {
        let (route, rest) = self
            .routes
            .iter()
            .filter(|route| &route.app_id == app_id)
            .filter_map(|route| route.upstream_prefix.strip(path).map(|rest| (route, rest)))
            .max_by_key(|(route, _)| route.upstream_prefix.as_str().len())?;
        let public = format!("{}{rest}", route.prefix.as_str());
        // A longer prefix of another app may shadow this one.
        let reached = self
            .resolve(&public, None)
            .is_ok_and(|target| std::ptr::eq(target.route, route));
        reached.then_some(public)
    }
}

/// Whether `path` (empty or starting with `/`) stays what it is once the sidecar has decoded
/// and normalized it: no empty segments except a trailing slash, no `.`/`..` segments (also
/// percent-encoded), no encoded `/`, `?` or `#`, no `\`.
fn is_safe(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    segments.iter().enumerate().all(|(index, segment)| {
        if segment.is_empty() {
            return index == last;
        }
        let decoded = percent_decode(segment);
        let dots = decoded == b"." || decoded == b"..";
        let escapes = decoded
            .iter()
            .any(|b| matches!(b, b'/' | b'\\' | b'?' | b'#') || b.is_ascii_control());
        !(dots || escapes)
    })
}

/// Decodes `%XX` escapes; malformed escapes stay as they are.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{default_internal_paths, default_routes};

    fn table() -> RouteTable {
        RouteTable::parse(&default_routes(), &default_internal_paths()).expect("valid")
    }

    fn user(role: Role) -> AuthUser {
        AuthUser {
            id: uuid::Uuid::new_v4(),
            email: "ada@example.com".into(),
            role,
        }
    }

    #[test]
    fn auth_paths_lose_their_prefix_and_others_keep_their_resource() {
        let table = table();
        let target = table.resolve("/api/auth/login", None).expect("routed");
        assert_eq!(target.route.app_id.as_str(), "auth");
        assert_eq!(target.path_and_query, "/login");
        let target = table
            .resolve("/api/products/42", Some("full=true"))
            .expect("routed");
        assert_eq!(target.route.app_id.as_str(), "inventory");
        assert_eq!(target.path_and_query, "/products/42?full=true");
        assert_eq!(
            table
                .resolve("/api/products", None)
                .expect("routed")
                .path_and_query,
            "/products"
        );
        assert_eq!(
            table
                .resolve("/api/auth", None)
                .expect("routed")
                .path_and_query,
            "/"
        );
        assert_eq!(
            table
                .resolve("/api/notifications/stream", None)
                .expect("routed")
                .path_and_query,
            "/notifications/stream"
        );
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        let table = table();
        assert_eq!(
            table.resolve("/api/productsx", None),
            Err(RouteError::NotFound)
        );
        assert_eq!(table.resolve("/api", None), Err(RouteError::NotFound));
        assert_eq!(table.resolve("/elsewhere", None), Err(RouteError::NotFound));
    }

    #[test]
    fn the_longest_prefix_wins() {
        let table = RouteTable::parse(
            &[
                RouteSettings::new("/api", "everything", ""),
                RouteSettings::new("/api/products", "inventory", "/products"),
            ],
            &[],
        )
        .expect("valid");
        assert_eq!(
            table
                .resolve("/api/products/1", None)
                .expect("routed")
                .route
                .app_id
                .as_str(),
            "inventory"
        );
        assert_eq!(
            table
                .resolve("/api/other", None)
                .expect("routed")
                .route
                .app_id
                .as_str(),
            "everything"
        );
        // `everything` documents /products/1, but the public path reaches inventory.
        assert_eq!(
            table.public_path(&AppId::parse("everything").expect("valid"), "/products/1"),
            None
        );
    }

    #[test]
    fn paths_that_would_escape_their_prefix_are_refused() {
        let table = table();
        for path in [
            "/api/products/../orders",
            "/api/products/%2e%2e/x",
            "/api/products/.%2E",
            "/api/products/./x",
            "/api/products/a%2Fb",
            "/api/products/a%5cb",
            "/api/products/a\\b",
            "/api/products/a%3Fb",
            "/api/products//x",
            "/api/auth//metrics",
        ] {
            assert_eq!(
                table.resolve(path, None),
                Err(RouteError::UnsafePath),
                "{path}"
            );
        }
        assert!(table.resolve("/api/products/a%20b", None).is_ok());
        assert!(table.resolve("/api/products/v1.0", None).is_ok());
        assert!(table.resolve("/api/products/", None).is_ok());
    }

    #[test]
    fn the_apps_operations_and_event_endpoints_are_not_forwarded() {
        let table = table();
        for path in [
            "/api/auth/metrics",
            "/api/auth/readyz",
            "/api/auth/healthz",
            "/api/auth/dapr/subscribe",
            "/api/auth/events/user-registered",
            "/api/auth/%6detrics",
            "/api/auth/%65vents/x",
        ] {
            assert_eq!(
                table.resolve(path, None),
                Err(RouteError::NotFound),
                "{path}"
            );
        }
        assert!(table.resolve("/api/auth/metricsx", None).is_ok());
        assert!(table.resolve("/api/products/metrics", None).is_ok());
        let auth = AppId::parse("auth").expect("valid");
        assert_eq!(table.public_path(&auth, "/events/user-registered"), None);
    }

    #[test]
    fn documented_paths_map_to_their_public_form() {
        let table = table();
        let auth = AppId::parse("auth").expect("valid");
        let inventory = AppId::parse("inventory").expect("valid");
        assert_eq!(
            table.public_path(&auth, "/login").as_deref(),
            Some("/api/auth/login")
        );
        assert_eq!(
            table.public_path(&inventory, "/products/{id}").as_deref(),
            Some("/api/products/{id}")
        );
        assert_eq!(
            table.public_path(&inventory, "/products").as_deref(),
            Some("/api/products")
        );
        assert_eq!(table.public_path(&inventory, "/internal/reserve"), None);
        assert_eq!(table.public_path(&inventory, "/productsx"), None);
    }

    #[test]
    fn product_writes_need_an_admin_and_reads_need_nobody() {
        let table = table();
        let products = table.resolve("/api/products", None).expect("routed").route;
        assert_eq!(
            products.authorize(&Method::POST, None),
            Err(AccessError::SignInRequired)
        );
        assert_eq!(
            products.authorize(&Method::DELETE, Some(&user(Role::Customer))),
            Err(AccessError::RoleRequired(Role::Admin))
        );
        assert_eq!(
            products.authorize(&Method::PATCH, Some(&user(Role::Admin))),
            Ok(())
        );
        assert_eq!(products.authorize(&Method::GET, None), Ok(()));
        let orders = table.resolve("/api/orders", None).expect("routed").route;
        assert_eq!(orders.authorize(&Method::POST, None), Ok(()));
    }

    #[test]
    fn app_ids_and_prefixes_are_checked() {
        assert!(AppId::parse("inventory").is_ok());
        assert!(AppId::parse("orders.shop").is_err());
        assert!(AppId::parse("").is_err());
        assert!(PathPrefix::parse("/api/{id}", false).is_err());
        assert!(PathPrefix::parse("/api//x", false).is_err());
        assert!(PathPrefix::parse("", false).is_err());
        assert!(PathPrefix::parse("", true).is_ok());
        assert!(PathPrefix::parse("/api/../x", false).is_err());
    }
}
