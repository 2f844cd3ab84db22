//! Properties of `-p` parsing: every valid spec rendered in any of Docker's
//! forms parses back to the same fields; arbitrary strings never panic the
//! parser; ports above 65535 are refused wherever they appear, with a
//! message naming the spec. Pure functions: no root needed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use rete::model::Protocol;
use rete::portspec::{PortRange, PortSpec};

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        Just(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Just(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ]
}

/// A range of `len` ports starting at a port that leaves room for it.
fn range_of_len(len: u16) -> impl Strategy<Value = PortRange> {
    (1..=65536 - u32::from(len)).prop_map(move |start| PortRange {
        start: start as u16,
        end: (start + u32::from(len) - 1) as u16,
    })
}

fn protocol() -> impl Strategy<Value = Option<Protocol>> {
    prop_oneof![
        Just(None),
        Just(Some(Protocol::Tcp)),
        Just(Some(Protocol::Udp)),
        Just(Some(Protocol::Sctp)),
    ]
}

/// A valid spec: container ports (one or a range), host ports absent, one
/// port, or a range as long as the container's (or any range for a single
/// container port), an optional host address, an optional protocol.
type Fields = (
    Option<IpAddr>,
    Option<PortRange>,
    PortRange,
    Option<Protocol>,
);

fn spec() -> impl Strategy<Value = Fields> {
    (1u16..=64, any::<bool>(), 0u8..4, 1u16..=64).prop_flat_map(
        |(clen, single, host_kind, hlen)| {
            let clen = if single { 1 } else { clen };
            let host: BoxedStrategy<Option<PortRange>> = match host_kind {
                0 => Just(None).boxed(),
                1 if clen == 1 => range_of_len(1).prop_map(Some).boxed(),
                2 => range_of_len(clen).prop_map(Some).boxed(),
                // A host range to pick one port from, for one container port.
                3 if clen == 1 => range_of_len(hlen).prop_map(Some).boxed(),
                _ => Just(None).boxed(),
            };
            (
                proptest::option::of(ip()),
                host,
                range_of_len(clen),
                protocol(),
            )
        },
    )
}

fn render_range(r: PortRange) -> String {
    if r.start == r.end {
        r.start.to_string()
    } else {
        format!("{}-{}", r.start, r.end)
    }
}

/// Renders a spec in Docker's syntax; `zero_host` writes an absent host
/// port as an explicit `0` where the syntax allows one.
fn render(
    ip: Option<IpAddr>,
    host: Option<PortRange>,
    container: PortRange,
    proto: Option<Protocol>,
    zero_host: bool,
) -> String {
    let host = match host {
        Some(r) => Some(render_range(r)),
        None if zero_host => Some("0".to_string()),
        None => None,
    };
    let mut s = match (ip, host) {
        (Some(IpAddr::V6(a)), h) => format!("[{a}]:{}:", h.unwrap_or_default()),
        (Some(a), h) => format!("{a}:{}:", h.unwrap_or_default()),
        (None, Some(h)) => format!("{h}:"),
        (None, None) => String::new(),
    };
    s.push_str(&render_range(container));
    if let Some(p) = proto {
        s.push('/');
        s.push_str(&p.to_string());
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every valid spec parses back to the fields it was rendered from.
    #[test]
    fn rendered_specs_round_trip(
        (ip, host, container, proto) in spec(),
        zero_host in any::<bool>(),
    ) {
        let text = render(ip, host, container, proto, zero_host);
        let parsed: PortSpec = text
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(
            parsed,
            PortSpec {
                host_ip: ip,
                host_ports: host,
                container_ports: container,
                protocol: proto.unwrap_or(Protocol::Tcp),
            },
            "{}", text
        );
    }

    /// Arbitrary text never panics the parser; a refusal quotes the spec.
    #[test]
    fn garbage_never_panics(s in "\\PC{0,40}") {
        if let Err(e) = s.parse::<PortSpec>() {
            prop_assert!(e.contains("invalid port mapping"), "{}", e);
            prop_assert!(e.contains(&format!("\"{s}\"")), "{}", e);
        }
    }

    /// Text made of the spec's own alphabet reaches deeper into the parser;
    /// it never panics either, and what it accepts is a valid spec.
    #[test]
    fn near_misses_never_panic(s in "[0-9:\\[\\]/.\\-a-fptcusx]{0,30}") {
        match s.parse::<PortSpec>() {
            Ok(p) => {
                prop_assert!(p.container_ports.start >= 1);
                prop_assert!(p.container_ports.start <= p.container_ports.end);
                if let Some(h) = p.host_ports {
                    prop_assert!(h.start >= 1 && h.start <= h.end);
                    prop_assert!(
                        h.len() == p.container_ports.len() || p.container_ports.len() == 1,
                        "{}: {:?}", s, p
                    );
                }
                if let Some(IpAddr::V4(_)) = p.host_ip {
                    prop_assert!(!s.starts_with('['), "{}", s);
                }
            }
            Err(e) => prop_assert!(e.contains("invalid port mapping"), "{}", e),
        }
    }

    /// A port above 65535 is refused wherever it stands, with its number or
    /// text in the message.
    #[test]
    fn ports_above_65535_are_refused(
        big in prop_oneof![65536u64..=70000, 65536u64..=u64::MAX],
        ok in 1u16..=65535,
        ip in proptest::option::of(ip()),
        place in 0usize..6,
        proto in protocol(),
    ) {
        let (host, container) = match place {
            0 => (None, big.to_string()),
            1 => (Some(big.to_string()), ok.to_string()),
            2 => (Some(ok.to_string()), big.to_string()),
            3 => (None, format!("{ok}-{big}")),
            4 => (Some(format!("{ok}-{big}")), ok.to_string()),
            _ => (Some(format!("{ok}-{big}")), format!("{ok}-{big}")),
        };
        let mut text = match (ip, host) {
            (Some(IpAddr::V6(a)), h) => format!("[{a}]:{}:", h.unwrap_or_default()),
            (Some(a), h) => format!("{a}:{}:", h.unwrap_or_default()),
            (None, Some(h)) => format!("{h}:"),
            (None, None) => String::new(),
        };
        text.push_str(&container);
        if let Some(p) = proto {
            text.push('/');
            text.push_str(&p.to_string());
        }
        let err = text.parse::<PortSpec>().expect_err(&text);
        prop_assert!(err.contains(&format!("\"{text}\"")), "{}", err);
        prop_assert!(err.contains(&big.to_string()), "{}", err);
    }
}

#[test]
fn edges() {
    let p = |s: &str| s.parse::<PortSpec>();
    assert_eq!(p("65535").unwrap().container_ports.end, 65535);
    assert_eq!(
        p("1-65535:1-65535").unwrap().host_ports,
        Some(PortRange {
            start: 1,
            end: 65535
        })
    );
    assert!(p("65536").unwrap_err().contains("65536"));
    assert!(p("65535-65536").unwrap_err().contains("65536"));
    assert!(p("99999999999999999999999").is_err());
}
