//! Defaults that come from the machine: the node name and the address peers reach it at.

use std::net::{IpAddr, SocketAddr};

/// The host name (`HOSTNAME`, else `/etc/hostname`), else `ringtail`.
pub(super) fn default_node_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "ringtail".to_owned())
}

/// The listen IP if it is specific; else the local IP that routes to the first seed that
/// resolves; else the IP of the default route's interface (a seed's name may not resolve
/// yet when a container starts); else loopback.
pub(super) fn default_advertise(listen: SocketAddr, seeds: &[String]) -> IpAddr {
    if !listen.ip().is_unspecified() {
        return listen.ip();
    }
    let routed_to = |target: SocketAddr| {
        // Connecting a UDP socket sends nothing: it only asks the routing table.
        let probe = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
        probe.connect(target).ok()?;
        let ip = probe.local_addr().ok()?.ip();
        (!ip.is_unspecified()).then_some(ip)
    };
    seeds
        .iter()
        .find_map(|seed| {
            use std::net::ToSocketAddrs;
            routed_to(seed.to_socket_addrs().ok()?.next()?)
        })
        // TEST-NET-1 (RFC 5737): never a real host, routed like any remote address.
        .or_else(|| routed_to(SocketAddr::from(([192, 0, 2, 1], 9))))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}
