//! Parsing Docker's `-p` forms: `CPORT`, `HPORT:CPORT`, `IP::CPORT`,
//! `IP:HPORT:CPORT`, ranges (`8000-8009:80-89`), `/tcp|/udp|/sctp`, and IPv6
//! host addresses in brackets (`[::1]:8080:80`).

use std::net::IpAddr;

use crate::model::Protocol;

/// An inclusive port range; a single port has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    /// A range always holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn len(&self) -> u32 {
        u32::from(self.end - self.start) + 1
    }
}

/// One `-p` argument, parsed but not yet resolved against the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// `None`: every host address.
    pub host_ip: Option<IpAddr>,
    /// `None`: rete picks free host ports.
    pub host_ports: Option<PortRange>,
    pub container_ports: PortRange,
    pub protocol: Protocol,
}

impl std::str::FromStr for PortSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        parse(spec).map_err(|why| format!("invalid port mapping \"{spec}\": {why}"))
    }
}

fn parse(spec: &str) -> Result<PortSpec, String> {
    let (body, protocol) = match spec.rsplit_once('/') {
        Some((body, proto)) => (body, proto.parse::<Protocol>()?),
        None => (spec, Protocol::Tcp),
    };
    let (host_ip, ports) = if let Some(rest) = body.strip_prefix('[') {
        let (ip, rest) = rest
            .split_once(']')
            .ok_or("an IPv6 address opened with [ is not closed with ]")?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("\"{ip}\" is not an IP address"))?;
        if !ip.is_ipv6() {
            return Err("only IPv6 addresses go in brackets".into());
        }
        let rest = rest
            .strip_prefix(':')
            .ok_or("expected :HOSTPORT:CONTAINERPORT after the address")?;
        (Some(ip), split_ports(rest, true)?)
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            1 | 2 => (None, split_ports(body, false)?),
            3 => {
                let ip: IpAddr = parts[0]
                    .parse()
                    .map_err(|_| format!("\"{}\" is not an IP address", parts[0]))?;
                (Some(ip), split_ports(&body[parts[0].len() + 1..], true)?)
            }
            _ => {
                return Err(
                    "too many ':'; put an IPv6 host address in brackets, as [::1]:8080:80".into(),
                )
            }
        }
    };
    let (host, container) = ports;
    let container_ports = range(container, 1)?;
    let host_ports = match host {
        None | Some("") => None,
        Some(h) => {
            let r = range(h, 0)?;
            if r.start == 0 && r.end == 0 {
                None
            } else if r.start == 0 {
                return Err("host port 0 means \"pick one\" and cannot start a range".into());
            } else {
                if r.len() != container_ports.len() && container_ports.len() != 1 {
                    return Err(format!(
                        "host range has {} ports but container range has {}; make them the same length",
                        r.len(),
                        container_ports.len()
                    ));
                }
                Some(r)
            }
        }
    };
    Ok(PortSpec {
        host_ip,
        host_ports,
        container_ports,
        protocol,
    })
}

/// Splits "HOST:CONTAINER" or "CONTAINER". With `need_host`, the host part
/// must be present (possibly empty, as in IP::CPORT).
fn split_ports(s: &str, need_host: bool) -> Result<(Option<&str>, &str), String> {
    match s.split_once(':') {
        Some((h, c)) => Ok((Some(h), c)),
        None if need_host => Err("expected HOSTPORT:CONTAINERPORT after the host address".into()),
        None => Ok((None, s)),
    }
}

fn range(s: &str, min: u16) -> Result<PortRange, String> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    let a = port(a, min)?;
    let b = port(b, min)?;
    if a > b {
        return Err(format!("range {a}-{b} ends before it starts"));
    }
    Ok(PortRange { start: a, end: b })
}

fn port(s: &str, min: u16) -> Result<u16, String> {
    if s.is_empty() {
        return Err("a port is missing".into());
    }
    let n: u32 = s
        .parse()
        .map_err(|_| format!("\"{s}\" is not a port number"))?;
    if n > 65535 || n < u32::from(min) {
        return Err(format!("port {n} is outside {min}-65535"));
    }
    Ok(n as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortSpec {
        s.parse().unwrap()
    }

    #[test]
    fn docker_forms() {
        assert_eq!(p("80").container_ports, PortRange { start: 80, end: 80 });
        assert_eq!(p("80").host_ports, None);
        assert_eq!(
            p("8080:80").host_ports,
            Some(PortRange {
                start: 8080,
                end: 8080
            })
        );
        let s = p("127.0.0.1::80/udp");
        assert_eq!(s.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s.host_ports, None);
        assert_eq!(s.protocol, Protocol::Udp);
        let s = p("[::1]:8080:80/sctp");
        assert_eq!(s.host_ip, Some("::1".parse().unwrap()));
        assert_eq!(s.protocol, Protocol::Sctp);
        let s = p("8000-8009:80-89");
        assert_eq!(s.host_ports.unwrap().len(), 10);
        assert_eq!(p("0:80").host_ports, None);
        assert_eq!(p("[::]::80").host_ports, None);
    }

    #[test]
    fn bad_forms() {
        for bad in [
            "",
            "0",
            "80/icmp",
            "70000",
            "a:80",
            "8080:",
            "1.2.3.4:80",
            "::1:80:80",
            "8000-8009:80-85",
            "90-80",
            "[1.2.3.4]:80:80",
            "[::1:80:80",
            "x.y::80",
        ] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad} should fail");
        }
    }
}
