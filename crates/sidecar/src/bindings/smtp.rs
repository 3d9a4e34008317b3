//! `bindings.smtp`: sends the payload as an HTML email (`create`).
//!
//! As components-contrib: `emailFrom`, `emailTo`, `emailCC`, `emailBCC`, `subject` and
//! `priority` come from the component and may be overridden per request (recipients separated by
//! `;`); port 465 means implicit TLS, other ports upgrade with STARTTLS when the server offers it;
//! credentials are used when set. Unlike components-contrib ≥ 1.16, a request's overrides apply
//! to that request only.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MessageBuilder};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{BindingError, BindingRequest, BindingResponse, OutputBinding, request_value, unquote};
use crate::resources::{ComponentMetadata, ResourceError};

pub(super) struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    defaults: BTreeMap<&'static str, String>,
}

const FIELDS: [&str; 6] = [
    "emailFrom",
    "emailTo",
    "emailCC",
    "emailBCC",
    "subject",
    "priority",
];

/// The `X-Priority` header (1 highest … 5 lowest).
#[derive(Clone)]
struct Priority(u8);

impl Header for Priority {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Priority")
    }

    fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(text.trim().parse()?))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.to_string())
    }
}

fn parse_priority(text: Option<&str>) -> Result<u8, String> {
    match text {
        None => Ok(3),
        Some(text) => match text.trim().parse::<u8>() {
            Ok(n @ 1..=5) => Ok(n),
            _ => Err(format!(
                "priority value must be between 1 (highest) and 5 (lowest), got {text:?}"
            )),
        },
    }
}

impl Smtp {
    pub(super) fn new(metadata: &ComponentMetadata) -> Result<Self, ResourceError> {
        let host = metadata.required("host")?;
        let port: u16 = metadata
            .parse("port")?
            .ok_or_else(|| metadata.error("port", "required metadata field is missing"))?;
        let skip_verify = metadata.bool("skipTLSVerify", false)?;
        let tls = TlsParameters::builder(host.to_owned())
            .dangerous_accept_invalid_certs(skip_verify)
            .dangerous_accept_invalid_hostnames(skip_verify)
            .build_rustls()
            .map_err(|e| metadata.error("host", format!("cannot set up TLS: {e}")))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(Duration::from_secs(10)))
            .tls(if port == 465 {
                Tls::Wrapper(tls)
            } else {
                Tls::Opportunistic(tls)
            });
        match (metadata.get("user"), metadata.get("password")) {
            (Some(user), Some(password)) => {
                builder =
                    builder.credentials(Credentials::new(user.to_owned(), password.to_owned()));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(metadata.error("password", "both user and password are required"));
            }
            (None, Some(_)) => {
                return Err(metadata.error("user", "both user and password are required"));
            }
        }
        parse_priority(metadata.get("priority")).map_err(|e| metadata.error("priority", e))?;
        let defaults = FIELDS
            .iter()
            .filter_map(|field| metadata.get(field).map(|v| (*field, v.to_owned())))
            .collect();
        Ok(Self {
            transport: builder.build(),
            defaults,
        })
    }

    fn message(&self, request: &BindingRequest) -> Result<Message, BindingError> {
        let field = |name: &'static str| {
            request_value(&request.metadata, name)
                .or_else(|| self.defaults.get(name).map(String::as_str))
        };
        let required = |name: &'static str| {
            field(name).ok_or_else(|| {
                BindingError::new(format!(
                    "smtp binding error: {name} property not supplied in configuration- or request-metadata"
                ))
            })
        };
        let mailboxes = |text: &str| -> Result<Vec<Mailbox>, BindingError> {
            text.split(';')
                .map(str::trim)
                .filter(|address| !address.is_empty())
                .map(|address| {
                    address
                        .parse::<Mailbox>()
                        .map_err(|e| BindingError::new(format!("invalid address {address:?}: {e}")))
                })
                .collect()
        };
        let from = required("emailFrom")?;
        let to = required("emailTo")?;
        let subject = required("subject")?;
        let priority = parse_priority(field("priority"))
            .map_err(|e| BindingError::new(format!("smtp binding error: {e}")))?;
        let mut builder: MessageBuilder = Message::builder()
            .from(
                from.parse::<Mailbox>()
                    .map_err(|e| BindingError::new(format!("invalid address {from:?}: {e}")))?,
            )
            .subject(subject)
            .header(Priority(priority))
            .header(ContentType::TEXT_HTML);
        for mailbox in mailboxes(to)? {
            builder = builder.to(mailbox);
        }
        if let Some(cc) = field("emailCC") {
            for mailbox in mailboxes(cc)? {
                builder = builder.cc(mailbox);
            }
        }
        if let Some(bcc) = field("emailBCC") {
            for mailbox in mailboxes(bcc)? {
                builder = builder.bcc(mailbox);
            }
        }
        let body = String::from_utf8_lossy(&unquote(&request.data)).into_owned();
        builder
            .body(body)
            .map_err(|e| BindingError::new(format!("smtp binding error: {e}")))
    }
}

#[async_trait]
impl OutputBinding for Smtp {
    fn operations(&self) -> &'static [&'static str] {
        &["create"]
    }

    async fn invoke(
        &self,
        request: BindingRequest,
    ) -> Result<Option<BindingResponse>, BindingError> {
        let message = self.message(&request)?;
        self.transport
            .send(message)
            .await
            .map(|_| None)
            .map_err(|e| {
                BindingError::new(format!(
                    "error from smtp binding, sending email failed: {e}"
                ))
            })
    }
}
