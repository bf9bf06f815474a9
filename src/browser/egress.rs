//! The only way out of a session's network namespace: a SOCKS5 proxy the daemon serves on a
//! Unix socket inside the session's sandbox (the sandbox's init relays the browser's
//! loopback proxy port to it). Names are resolved here, and every address a name resolves
//! to is checked **at connect time** against the egress policy, so DNS rebinding cannot
//! reach an internal address: loopback, link-local, RFC 1918, CGNAT, unique-local,
//! multicast and other non-public ranges are refused unless `browser.egress_allow` names them,
//! and so are this host's own addresses and the networks its interfaces are on, public or
//! not (a page must not reach what the host, or a neighbour on its segment, serves on a public
//! address), and the ranges of [`ALWAYS_DENIED`] and `browser.egress_deny`, whatever else
//! opens them (a cloud's host services on a public address). A session holds at most [`MAX_TUNNELS`] connections
//! and [`MAX_LOOKUPS`] name lookups at once (lookups take threads of the blocking pool the
//! daemon's saves share).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

/// Connections one session's browser may hold open through the proxy at once (Chromium
/// keeps far fewer); past it, new ones are closed at once.
pub const MAX_TUNNELS: usize = 512;
/// Name lookups one session may have running at once.
pub const MAX_LOOKUPS: usize = 16;

/// Public addresses no page reaches, whatever `browser.egress_allow` says: Azure's WireServer
/// (and its host agent, port 32526), which hands a VM's goal state and extension settings to
/// whoever on the VM asks as root, and the daemon may run as root.
pub const ALWAYS_DENIED: &[&str] = &["168.63.129.16/32"];

/// An interface's network wider than this (IPv4 /16, IPv6 /48) counts as its address alone:
/// a misconfigured netmask does not close half the internet.
const WIDEST_OWN: (u8, u8) = (16, 48);

/// A CIDR range (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a CIDR range (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: bad prefix length"))?
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// The network of an interface's `addr` with a netmask of `bits` leading ones (none: the
    /// address alone; wider than [`WIDEST_OWN`]: likewise).
    fn network(addr: IpAddr, bits: Option<u8>) -> Cidr {
        let (max, widest) = if addr.is_ipv4() {
            (32, WIDEST_OWN.0)
        } else {
            (128, WIDEST_OWN.1)
        };
        let prefix = bits.filter(|b| (widest..=max).contains(b)).unwrap_or(max);
        Cidr { addr, prefix }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & m == u32::from(a) & m
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & m == u128::from(a) & m
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is a public unicast address (what a page may reach by default).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => public_v4(a),
        IpAddr::V6(a) => public_v6(a),
    }
}

fn public_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
        || a.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

fn public_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64: may embed an internal IPv4
        || s[0] == 0x2002 // 6to4: likewise
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || s[..6].iter().all(|&x| x == 0)) // IPv4-compatible ::a.b.c.d (deprecated)
}

/// The networks of this host's own interfaces (each address with its netmask), read again at
/// most every few seconds.
fn own_networks() -> Vec<Cidr> {
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, Vec<Cidr>)>> =
        std::sync::Mutex::new(None);
    let mut c = CACHE.lock().expect("own addresses");
    match &*c {
        Some((at, v)) if at.elapsed() < Duration::from_secs(5) => v.clone(),
        _ => match interface_addresses() {
            Some(v) => {
                *c = Some((std::time::Instant::now(), v.clone()));
                v
            }
            // Unreadable now: the last list read (none at all only if it never was).
            None => c.as_ref().map(|(_, v)| v.clone()).unwrap_or_default(),
        },
    }
}

/// The network of every address of every interface of this host's network namespace
/// (`getifaddrs`): the address with its netmask's prefix (see [`WIDEST_OWN`]).
#[allow(unsafe_code)]
fn interface_addresses() -> Option<Vec<Cidr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that is freed below, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null ifa_addr points to a sockaddr of the family it names.
            match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    // SAFETY: as above, an AF_INET address is a sockaddr_in; a non-null
                    // netmask is of the address's family.
                    let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    let bits = (!ifa.ifa_netmask.is_null()).then(|| {
                        // SAFETY: as above.
                        let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
                        u32::from_be(m.sin_addr.s_addr).leading_ones() as u8
                    });
                    let addr = IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)));
                    out.push(Cidr::network(addr, bits));
                }
                libc::AF_INET6 => {
                    // SAFETY: as above, an AF_INET6 address is a sockaddr_in6.
                    let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    let bits = (!ifa.ifa_netmask.is_null()).then(|| {
                        // SAFETY: as above.
                        let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in6) };
                        u128::from_be_bytes(m.sin6_addr.s6_addr).leading_ones() as u8
                    });
                    out.push(Cidr::network(
                        IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                        bits,
                    ));
                }
                _ => {}
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Some(out)
}

/// What the browsers of this node may connect to.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Non-public ranges an operator opened (`browser.egress_allow`).
    pub allow: Vec<Cidr>,
    /// Ranges an operator closed (`browser.egress_deny`), beside [`ALWAYS_DENIED`].
    pub deny: Vec<Cidr>,
}

impl Policy {
    /// Whether a connection to `ip` is allowed: in no range denied, and in a range the
    /// operator opened, or a public address not on this host's own networks.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allows_beside(ip, &own_networks())
    }

    /// [`Policy::allows`], with `own` as this host's networks.
    fn allows_beside(&self, ip: IpAddr, own: &[Cidr]) -> bool {
        let denied = ALWAYS_DENIED
            .iter()
            .any(|c| c.parse::<Cidr>().is_ok_and(|c| c.contains(ip)))
            || self.deny.iter().any(|c| c.contains(ip));
        !denied
            && (self.allow.iter().any(|c| c.contains(ip))
                || (is_public(ip) && !own.iter().any(|o| o.contains(ip))))
    }

    /// Whether a URL's host is a literal address this policy refuses (names are checked
    /// when they are resolved).
    pub fn refuses_literal(&self, host: &str) -> bool {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        h.parse::<IpAddr>().is_ok_and(|ip| !self.allows(ip))
            || h.eq_ignore_ascii_case("localhost")
            || h.to_ascii_lowercase().ends_with(".localhost")
    }
}

/// Counters of the egress proxy (for `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections made.
    pub allowed: AtomicU64,
    /// Connections refused by the policy.
    pub refused: AtomicU64,
    /// Connections that failed (resolution, connect, protocol).
    pub failed: AtomicU64,
}

/// The process-wide counters.
pub static COUNTERS: Counters = Counters {
    allowed: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    failed: AtomicU64::new(0),
};

/// Serves the SOCKS5 proxy of one session on `path` until the returned task is aborted.
///
/// # Errors
/// The socket cannot be bound.
pub fn serve(
    path: &Path,
    policy: Arc<Policy>,
    session: String,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = bind_short(path)?;
    let tunnels = Arc::new(tokio::sync::Semaphore::new(MAX_TUNNELS));
    let lookups = Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS));
    Ok(tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let Ok(slot) = tunnels.clone().try_acquire_owned() else {
                COUNTERS.failed.fetch_add(1, Ordering::Relaxed);
                drop(conn);
                continue;
            };
            let (policy, session, lookups) = (policy.clone(), session.clone(), lookups.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let r = tokio::time::timeout(
                    Duration::from_secs(30),
                    handshake(conn, &policy, &lookups),
                )
                .await;
                match r {
                    Ok(Ok(Some((mut client, mut upstream)))) => {
                        COUNTERS.allowed.fetch_add(1, Ordering::Relaxed);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(Refusal::Policy(target))) => {
                        COUNTERS.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(session = %session, %target, "egress refused: not a public address");
                    }
                    Ok(Err(Refusal::Failed(why))) => {
                        COUNTERS.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(session = %session, why, "egress failed");
                    }
                    Err(_) => {
                        COUNTERS.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    }))
}

/// Binds a Unix socket at `path` whatever its length.
fn bind_short(path: &Path) -> std::io::Result<UnixListener> {
    crate::fsutil::with_socket_path(path, |p| UnixListener::bind(p))
}

enum Refusal {
    Policy(String),
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> Refusal {
    Refusal::Failed(e.to_string())
}

/// SOCKS5 (RFC 1928), CONNECT only, no authentication.
async fn handshake(
    mut c: UnixStream,
    policy: &Policy,
    lookups: &tokio::sync::Semaphore,
) -> Result<Option<(UnixStream, TcpStream)>, Refusal> {
    let mut head = [0u8; 2];
    c.read_exact(&mut head).await.map_err(failed)?;
    if head[0] != 5 {
        return Err(failed("not SOCKS5"));
    }
    let mut methods = vec![0u8; head[1] as usize];
    c.read_exact(&mut methods).await.map_err(failed)?;
    if !methods.contains(&0) {
        let _ = c.write_all(&[5, 0xff]).await;
        return Err(failed("no acceptable auth method"));
    }
    c.write_all(&[5, 0]).await.map_err(failed)?;
    let mut req = [0u8; 4];
    c.read_exact(&mut req).await.map_err(failed)?;
    if req[0] != 5 || req[1] != 1 {
        reply(&mut c, 7).await; // command not supported (UDP, BIND)
        return Err(failed("only CONNECT"));
    }
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            c.read_exact(&mut a).await.map_err(failed)?;
            Ipv4Addr::from(a).to_string()
        }
        4 => {
            let mut a = [0u8; 16];
            c.read_exact(&mut a).await.map_err(failed)?;
            Ipv6Addr::from(a).to_string()
        }
        3 => {
            let mut n = [0u8; 1];
            c.read_exact(&mut n).await.map_err(failed)?;
            let mut name = vec![0u8; n[0] as usize];
            c.read_exact(&mut name).await.map_err(failed)?;
            String::from_utf8(name).map_err(failed)?
        }
        _ => {
            reply(&mut c, 8).await;
            return Err(failed("bad address type"));
        }
    };
    let mut p = [0u8; 2];
    c.read_exact(&mut p).await.map_err(failed)?;
    let port = u16::from_be_bytes(p);
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            let _lookup = lookups.acquire().await.map_err(failed)?;
            match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    reply(&mut c, 4).await; // host unreachable
                    return Err(failed(e));
                }
            }
        }
    };
    // Every address the name resolved to must be allowed: a name that mixes public and
    // internal answers is refused whole.
    if addrs.is_empty() || addrs.iter().any(|a| !policy.allows(a.ip())) {
        // A name refused for where it points gets the answer of a name that does not
        // resolve: code speaking SOCKS here learns nothing of the internal names that exist.
        let named = host.parse::<IpAddr>().is_err();
        reply(&mut c, if named { 4 } else { 2 }).await; // host unreachable / not allowed
        return Err(Refusal::Policy(format!("{host}:{port}")));
    }
    let mut last = String::from("no address");
    for a in &addrs {
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(a)).await {
            Ok(Ok(up)) => {
                let mut ok = vec![5, 0, 0, 1, 0, 0, 0, 0, 0, 0];
                if c.write_all(&ok).await.is_err() {
                    return Ok(None);
                }
                ok.clear();
                return Ok(Some((c, up)));
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
    }
    reply(&mut c, 5).await; // connection refused
    Err(Refusal::Failed(last))
}

async fn reply(c: &mut UnixStream, code: u8) {
    let _ = c.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_not_public() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a00:1",
            "2002:a00:1::",
            "::10.0.0.1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[tokio::test]
    async fn a_name_refused_for_where_it_points_looks_like_one_that_does_not_resolve() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let policy = Policy::default();
        let lookups = tokio::sync::Semaphore::new(1);
        let ask = |name: &str| {
            let mut m = vec![5, 1, 0, 5, 1, 0, 3, name.len() as u8];
            m.extend_from_slice(name.as_bytes());
            m.extend_from_slice(&80u16.to_be_bytes());
            m
        };
        // `localhost` resolves (from /etc/hosts) to loopback, which is refused.
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        ours.write_all(&ask("localhost")).await.unwrap();
        assert!(matches!(
            handshake(theirs, &policy, &lookups).await,
            Err(Refusal::Policy(_))
        ));
        let mut got = [0u8; 4];
        ours.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [5, 0, 5, 4], "method accepted, then host unreachable");
    }

    #[test]
    fn allow_list_opens_ranges() {
        let p = Policy {
            allow: vec![
                "127.0.0.2/32".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            deny: Vec::new(),
        };
        assert!(p.allows("127.0.0.2".parse().unwrap()));
        assert!(!p.allows("127.0.0.1".parse().unwrap()));
        assert!(p.allows("10.9.9.9".parse().unwrap()));
        assert!(p.allows("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!p.allows("192.168.0.1".parse().unwrap()));
        assert!(p.refuses_literal("127.0.0.1"));
        assert!(p.refuses_literal("[::1]"));
        assert!(p.refuses_literal("localhost"));
        assert!(!p.refuses_literal("127.0.0.2"));
        assert!(!p.refuses_literal("example.com"));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        // This host's own networks are refused even when public, unless opened: its
        // addresses, and the segment an interface is on (its netmask), not wider than
        // WIDEST_OWN.
        let own: Vec<Cidr> = vec![
            Cidr::network("93.184.216.34".parse().unwrap(), Some(24)),
            Cidr::network("2606:4700::7".parse().unwrap(), Some(64)),
            Cidr::network("8.8.8.8".parse().unwrap(), Some(1)),
            Cidr::network("9.9.9.9".parse().unwrap(), None),
        ];
        let none = Policy::default();
        for a in [
            "1.1.1.1",
            "93.184.217.1",
            "8.8.4.4",
            "9.9.9.10",
            "2606:4700:0:1::7",
        ] {
            assert!(none.allows_beside(a.parse().unwrap(), &own), "{a}");
        }
        for a in [
            "93.184.216.34",
            "93.184.216.200",
            "::ffff:93.184.216.34",
            "2606:4700::7",
            "2606:4700::1:2",
            "8.8.8.8",
            "9.9.9.9",
        ] {
            assert!(!none.allows_beside(a.parse().unwrap(), &own), "{a}");
        }
        let opened = Policy {
            allow: vec!["93.184.216.34/32".parse().unwrap()],
            deny: Vec::new(),
        };
        assert!(opened.allows_beside("93.184.216.34".parse().unwrap(), &own));
        // Denied ranges win over everything: Azure's WireServer always, and the operator's.
        let closed = Policy {
            allow: vec![
                "168.63.0.0/16".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            deny: vec![
                "1.1.1.0/24".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
        };
        for a in [
            "168.63.129.16",
            "::ffff:168.63.129.16",
            "1.1.1.1",
            "10.1.2.3",
        ] {
            assert!(!closed.allows_beside(a.parse().unwrap(), &[]), "{a}");
            assert!(
                !none.allows_beside(a.parse().unwrap(), &[]) || a.starts_with("1."),
                "{a}"
            );
        }
        assert!(closed.allows_beside("10.2.0.1".parse().unwrap(), &[]));
        assert!(closed.allows_beside("168.63.129.17".parse().unwrap(), &[]));
        // The interfaces are read for real: loopback is among them, with its netmask.
        let read = interface_addresses().unwrap();
        assert!(read
            .iter()
            .any(|c| c.contains("127.0.0.1".parse().unwrap())));
        assert!("nope".parse::<Cidr>().is_err());
    }
}
