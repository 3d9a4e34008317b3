//! Where a test shop's mail goes: an SMTP server of the test's own for the server component
//! sets (their email binding is `bindings.smtp`), or the files `bindings.localstorage` writes
//! for the embedded default. Both read back as the same [`Email`]s, in the order they arrived.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A mail as the recipient sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// The recipient (SMTP `RCPT TO`); for a stored file, the user id of its folder.
    pub to: String,
    /// The subject (for a stored file: its HTML `<title>`).
    pub subject: String,
}

/// A minimal SMTP server on a free loopback port that accepts every message and keeps it:
/// enough for `lettre`, which the sidecar's SMTP binding uses (no TLS offered, no AUTH).
pub struct MailSink {
    port: u16,
    received: Arc<Mutex<Vec<Email>>>,
    server: JoinHandle<()>,
}

impl MailSink {
    /// Starts listening.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("the mail sink binds")?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    if let Err(error) = session(stream, &store).await {
                        eprintln!("mail sink: {error:#}");
                    }
                });
            }
        });
        Ok(Self {
            port,
            received,
            server,
        })
    }

    /// The port to give the SMTP binding.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What arrived so far, in order.
    pub fn received(&self) -> Vec<Email> {
        self.received
            .lock()
            .map(|received| received.clone())
            .unwrap_or_default()
    }
}

impl Drop for MailSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One SMTP conversation: every message is accepted and recorded once its data is complete.
async fn session(stream: TcpStream, store: &Mutex<Vec<Email>>) -> anyhow::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    writer.write_all(b"220 sink ESMTP\r\n").await?;
    let mut recipients = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 sink\r\n",
            "MAIL" => {
                recipients.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                let address = line
                    .split_once(':')
                    .map(|(_, address)| address.trim().trim_matches(['<', '>']).to_owned())
                    .unwrap_or_default();
                recipients.push(address);
                b"250 OK\r\n"
            }
            "DATA" => {
                writer.write_all(b"354 go ahead\r\n").await?;
                let mut headers = Vec::new();
                let mut in_headers = true;
                while let Some(line) = lines.next_line().await? {
                    if line == "." {
                        break;
                    }
                    if line.is_empty() {
                        in_headers = false;
                    }
                    if in_headers {
                        headers.push(line);
                    }
                }
                let subject = header(&headers, "subject").unwrap_or_default();
                if let Ok(mut store) = store.lock() {
                    for to in &recipients {
                        store.push(Email {
                            to: to.clone(),
                            subject: subject.clone(),
                        });
                    }
                }
                b"250 OK\r\n"
            }
            "RSET" | "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                writer.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        writer.write_all(reply).await?;
    }
    Ok(())
}

/// A header's value, unfolded, with RFC 2047 base64 words (`=?utf-8?b?...?=`) decoded.
fn header(headers: &[String], name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in headers {
        if let Some(current) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                current.push_str(line);
                continue;
            }
            break;
        }
        if let Some((key, rest)) = line.split_once(':')
            && key.eq_ignore_ascii_case(name)
        {
            value = Some(rest.trim().to_owned());
        }
    }
    let value = value?;
    // Adjacent encoded words join without the space between them (RFC 2047, 6.2).
    let mut decoded = String::new();
    let mut after_encoded = false;
    for word in value.split_whitespace() {
        let text = word
            .strip_prefix("=?utf-8?b?")
            .or_else(|| word.strip_prefix("=?UTF-8?B?"))
            .and_then(|encoded| encoded.strip_suffix("?="))
            .and_then(|encoded| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()
            })
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let joins_the_previous = after_encoded && text.is_some();
        if !decoded.is_empty() && !joins_the_previous {
            decoded.push(' ');
        }
        after_encoded = text.is_some();
        decoded.push_str(text.as_deref().unwrap_or(word));
    }
    Some(decoded)
}

/// The mails `bindings.localstorage` wrote under `root` (`<user id>/<notification id>.html`),
/// oldest first by the time each file was written.
pub(crate) fn stored(root: &Path) -> Vec<Email> {
    let mut found: Vec<(std::time::SystemTime, PathBuf, String)> = Vec::new();
    let Ok(users) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    for user in users.flatten() {
        let to = user.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(user.path()) else {
            continue;
        };
        for file in files.flatten() {
            let written = file
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            found.push((written, file.path(), to.clone()));
        }
    }
    found.sort();
    found
        .into_iter()
        .filter_map(|(_, path, to)| {
            let html = std::fs::read_to_string(path).ok()?;
            let subject = html.split_once("<title>")?.1.split_once("</title>")?.0;
            Some(Email {
                to,
                subject: unescape(subject),
            })
        })
        .collect()
}

/// The notifications app's HTML escapes, undone.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_and_folded_subjects_are_read_back() {
        let headers = vec![
            "From: shop@example.com".to_owned(),
            "Subject: =?utf-8?b?T3JkZXIgY29uZmlybWVk?=".to_owned(),
            "\t=?utf-8?b?OiAxOS44MCDigqw=?=".to_owned(),
            "To: ada@example.com".to_owned(),
        ];
        assert_eq!(
            header(&headers, "subject").as_deref(),
            Some("Order confirmed: 19.80 €")
        );
        assert_eq!(header(&headers, "to").as_deref(), Some("ada@example.com"));
    }
}
