//! Who the client is. Behind a load balancer or ingress every connection comes from the proxy,
//! so a per-client rate limit would be one bucket for everyone: when the peer is a trusted
//! proxy, the client is the last address in `X-Forwarded-For` that is not a trusted proxy
//! (earlier entries are whatever the client claimed and cannot be believed).

use std::net::IpAddr;

use axum::http::HeaderMap;

/// Networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Addresses (`10.0.0.7`) and networks (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse(items: &[String]) -> Result<Self, String> {
        let mut networks = Vec::with_capacity(items.len());
        for item in items {
            let invalid =
                || format!("{item:?} is not an IP address or a network such as 10.0.0.0/8");
            let (address, bits) = match item.split_once('/') {
                Some((address, bits)) => (address, Some(bits)),
                None => (item.as_str(), None),
            };
            let address: IpAddr = address.trim().parse().map_err(|_| invalid())?;
            let width = if address.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(bits) => bits
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= width)
                    .ok_or_else(invalid)?,
                None => width,
            };
            networks.push((
                canonical(address),
                if address.is_ipv4() { bits + 96 } else { bits },
            ));
        }
        Ok(Self { networks })
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = to_bits(canonical(address));
        self.networks.iter().any(|(network, bits)| {
            let mask = if *bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(*bits))
            };
            to_bits(*network) & mask == address & mask
        })
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|item| item.trim().parse::<IpAddr>())
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        forwarded
            .into_iter()
            .rev()
            .find(|address| !self.trusts(*address))
            .unwrap_or(peer)
    }
}

/// IPv4 as its IPv4-mapped IPv6 form, so both families compare as one.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    }
}

fn to_bits(address: IpAddr) -> u128 {
    match canonical(address) {
        IpAddr::V6(v6) => u128::from(v6),
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(items: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("valid")
    }

    fn forwarded_for(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_str(value).expect("ascii"),
        );
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("203.0.113.9"), &forwarded_for("1.2.3.4")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_last_untrusted_forwarded_address_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "192.168.1.5"]);
        // The client claimed 1.2.3.4; the ingress saw 198.51.100.7; an inner proxy added 10.1.2.3.
        let headers = forwarded_for("1.2.3.4, 198.51.100.7, 10.1.2.3");
        assert_eq!(
            trusted.client(ip("192.168.1.5"), &headers),
            ip("198.51.100.7")
        );
        assert_eq!(
            trusted.client(ip("10.9.9.9"), &forwarded_for("198.51.100.7")),
            ip("198.51.100.7")
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            trusted.client(ip("198.51.100.8"), &headers),
            ip("198.51.100.8")
        );
        // IPv4 peers on a dual-stack socket.
        assert_eq!(
            trusted.client(ip("::ffff:10.0.0.1"), &forwarded_for("198.51.100.7")),
            ip("198.51.100.7")
        );
        // Garbage or only proxies: the peer.
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &forwarded_for("nonsense")),
            ip("10.0.0.1")
        );
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &forwarded_for("10.0.0.2")),
            ip("10.0.0.1")
        );
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn networks_are_parsed_and_checked() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["fd00::/8".into(), "::1".into()]).is_ok());
        assert!(TrustedProxies::parse(&["ingress".into()]).is_err());
        let v6 = proxies(&["fd00::/8"]);
        assert_eq!(
            v6.client(ip("fd12::1"), &forwarded_for("2001:db8::5")),
            ip("2001:db8::5")
        );
        assert_eq!(
            v6.client(ip("fe80::1"), &forwarded_for("2001:db8::5")),
            ip("fe80::1")
        );
    }
}
