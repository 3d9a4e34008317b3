//! Which browser origins may call the API (CORS).

use axum::http::HeaderValue;

/// Allowed origins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// Any origin (`*`).
    Any,
    /// Exactly these (`https://shop.example`, `http://localhost:5173`).
    List(Vec<HeaderValue>),
}

impl Origins {
    /// `["*"]` is any origin; otherwise every entry must be `scheme://host[:port]`.
    pub fn parse(origins: &[String]) -> Result<Self, String> {
        match origins {
            [] => Err("must list `*` or at least one origin".into()),
            [any] if any == "*" => Ok(Self::Any),
            origins => origins
                .iter()
                .map(|origin| parse_origin(origin))
                .collect::<Result<Vec<_>, _>>()
                .map(Self::List),
        }
    }
}

fn parse_origin(origin: &str) -> Result<HeaderValue, String> {
    let invalid = || {
        format!("{origin:?} is not an origin such as `https://shop.example` (`*` must stand alone)")
    };
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(invalid)?;
    if rest.is_empty()
        || !rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']'))
    {
        return Err(invalid());
    }
    HeaderValue::from_str(origin).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_star_alone_means_any_origin() {
        assert_eq!(Origins::parse(&strings(&["*"])), Ok(Origins::Any));
        assert!(Origins::parse(&strings(&["*", "http://a.example"])).is_err());
        assert!(Origins::parse(&[]).is_err());
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert_eq!(
            Origins::parse(&strings(&["http://localhost:5173", "https://shop.example"])),
            Ok(Origins::List(vec![
                HeaderValue::from_static("http://localhost:5173"),
                HeaderValue::from_static("https://shop.example"),
            ]))
        );
        assert!(Origins::parse(&strings(&["shop.example"])).is_err());
        assert!(Origins::parse(&strings(&["https://shop.example/app"])).is_err());
    }
}
