//! Building and running the auth app.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use chrono::Utc;
use kit::dapr::Dapr;
use kit::extract::Role;
use kit::outbox::Outbox;
use kit::server::{HttpMetrics, Readiness};
use tokio::net::TcpListener;
use tokio::sync::OnceCell;

use crate::domain::{Email, Name, Password, PasswordHash, StoredUser, TokenSigner, UserId};
use crate::error::ApiError;
use crate::settings::{AuthSettings, Settings};
use crate::store::Users;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub(crate) users: Users,
    pub(crate) settings: Arc<AuthSettings>,
    signer: Arc<OnceCell<TokenSigner>>,
    pub(crate) dummy_hash: PasswordHash,
}

impl AppState {
    /// The token signer, once the keys are loaded.
    pub(crate) fn signer(&self) -> Result<&TokenSigner, ApiError> {
        self.signer.get().ok_or(ApiError::NotReady)
    }
}

/// The auth app, bound to its port and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    state: AppState,
    dapr: Dapr,
    outbox: Outbox,
    settings: Settings,
}

impl App {
    /// Binds the listener and builds the routes. Nothing talks to the sidecar yet, so the
    /// sidecar can be started after this (it needs the port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = kit::server::bind(&settings.app).await?;
        let dapr = Dapr::new(&settings.dapr)?;
        let auth = &settings.auth;
        let outbox = Outbox::new(dapr.clone(), &auth.state_store, &auth.pubsub);
        let dummy_hash = Password::attempt(uuid::Uuid::new_v4().to_string()).hash()?;
        let state = AppState {
            users: Users::new(dapr.clone(), &auth.state_store, outbox.clone()),
            settings: Arc::new(auth.clone()),
            signer: Arc::default(),
            dummy_hash,
        };
        let router = kit::server::app_router(
            "auth",
            crate::routes::router(state.clone()),
            HttpMetrics::new("auth"),
            Readiness::sidecar(&settings.dapr),
            &settings.dapr,
        );
        Ok(Self {
            listener,
            router,
            state,
            dapr,
            outbox,
            settings,
        })
    }

    /// The port the app listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Runs until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(kit::server::shutdown_signal()).await
    }

    /// Loads the keys, seeds the admin, then serves until `stop` resolves.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = kit::server::stop_on(stop);
        self.dapr.wait_until_ready(Duration::from_secs(60)).await?;
        let signer = load_signer(&self.dapr, &self.settings.auth).await?;
        let _ = self.state.signer.set(signer);
        seed_admin(&self.dapr, &self.state).await?;
        tokio::spawn(
            self.outbox
                .clone()
                .run(Duration::from_secs(5), stop.clone().cancelled_owned()),
        );
        tracing::info!(port = self.port(), "auth is serving");
        kit::server::serve(
            self.listener,
            self.router,
            stop.cancelled_owned(),
            Duration::from_secs(self.settings.app.drain_seconds),
        )
        .await
    }
}

async fn secret(dapr: &Dapr, store: &str, key: &str) -> anyhow::Result<Option<String>> {
    let values = dapr
        .secret(store, key)
        .await
        .with_context(|| format!("reading secret {key:?} from {store:?}"))?;
    Ok(values.get(key).filter(|v| !v.is_empty()).cloned())
}

async fn load_signer(dapr: &Dapr, settings: &AuthSettings) -> anyhow::Result<TokenSigner> {
    let store = &settings.secret_store;
    let current = secret(dapr, store, "jwt-signing-key")
        .await?
        .context("secret `jwt-signing-key` is missing: tokens cannot be signed")?;
    let previous = secret(dapr, store, "jwt-previous-signing-key")
        .await
        .ok()
        .flatten();
    TokenSigner::new(
        &current,
        previous.as_deref(),
        &settings.issuer,
        &settings.audience,
        settings.token_ttl_seconds,
    )
}

/// Creates the admin account from the `admin-email` and `admin-password` secrets if it does not
/// exist yet.
async fn seed_admin(dapr: &Dapr, state: &AppState) -> anyhow::Result<()> {
    let store = &state.settings.secret_store;
    let (Some(email), Some(password)) = (
        secret(dapr, store, "admin-email").await?,
        secret(dapr, store, "admin-password").await?,
    ) else {
        tracing::warn!("no admin-email/admin-password secrets: no admin account is created");
        return Ok(());
    };
    let email = Email::parse(&email).map_err(|e| anyhow::anyhow!("secret admin-email {e}"))?;
    if state.users.by_email(&email).await?.is_some() {
        return Ok(());
    }
    let password =
        Password::new(password).map_err(|e| anyhow::anyhow!("secret admin-password {e}"))?;
    let admin = StoredUser {
        id: UserId::generate(),
        email,
        name: Name::parse("Administrator").map_err(anyhow::Error::msg)?,
        password_hash: tokio::task::spawn_blocking(move || password.hash()).await??,
        role: Role::Admin,
        created_at: Utc::now(),
    };
    match state.users.create(&admin).await {
        Ok(()) => tracing::info!(email = %admin.email.as_str(), "admin account created"),
        // Another replica seeded it first.
        Err(ApiError::EmailTaken) => {}
        Err(other) => return Err(anyhow::anyhow!("creating the admin account: {other}")),
    }
    Ok(())
}

impl kit::server::Service for App {
    fn port(&self) -> u16 {
        App::port(self)
    }

    fn run(
        self: Box<Self>,
        stop: kit::server::Stop,
    ) -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(self.run_until(stop.cancelled_owned()))
    }
}
