//! NAT discovery: a peer classifies its NAT with STUN against the tracker, on the socket
//! its QUIC traffic uses, in the manner of RFC 5780.
//!
//! Order matters, because every packet sent opens the NAT a little more:
//! 1. Binding to the tracker's primary address: the reflexive address, and the tracker's
//!    other address (OTHER-ADDRESS). The same as the local address: no NAT (open).
//! 2. Filtering, before anything is sent to the other address: ask the primary to answer
//!    from the other IP and port (an answer comes through: endpoint-independent filtering),
//!    and from the other port only (address-dependent); neither: address-and-port-dependent.
//! 3. Mapping: Bindings to the other IP (primary port), the other IP and port, and the
//!    primary IP with the other port, one after the other. All the same mapping as in 1:
//!    endpoint-independent; the same for both of the other IP: address-dependent; else
//!    address-and-port-dependent.
//! 4. Allocation, from the ports of the new mappings in the order they were made: steps of
//!    1..=[`STEP_MAX`] are sequential, the local port kept is preserving, else random.
//!
//! Every wait is bounded: a test retransmits every [`RTO`] and gives up after [`TRIES`].

use crate::socket::Side;
use crate::stun::{Change, Reply};
use meshtv_proto::msg::NatReport;
use meshtv_proto::nat::{Allocation, Filtering, Mapping, NatType, Reachability};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Retransmission interval of a Binding request.
const RTO: Duration = Duration::from_millis(200);
/// Sends of one Binding request before the test counts as unanswered.
const TRIES: u32 = 3;
/// Largest port step still taken for sequential allocation.
pub(crate) const STEP_MAX: u16 = 16;

/// What the tests saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observations {
    /// The socket's address as the route to the tracker sees it (its IP filled in).
    pub(crate) local: Option<SocketAddr>,
    pub(crate) primary: Option<SocketAddr>,
    pub(crate) first: Option<Reply>,
    /// Answers to "answer from the other IP and port" and "from the other port".
    pub(crate) change_both: Option<bool>,
    pub(crate) change_port: Option<bool>,
    /// Mapped addresses of the mapping tests, in the order they were sent: (destination, mapped).
    pub(crate) mappings: Vec<(SocketAddr, Option<SocketAddr>)>,
}

/// Runs the tests against `tracker`; `None` when the tracker does not answer STUN.
pub(crate) async fn discover(side: &Arc<Side>, tracker: SocketAddr) -> Option<NatReport> {
    let mut obs = Observations { primary: Some(tracker), ..Default::default() };
    let bound = side.io().local_addr().ok()?;
    obs.local = Some(SocketAddr::new(local_ip_toward(bound, tracker), bound.port()));
    obs.first = Some(binding(side, tracker, Change::default()).await?);
    let first = obs.first.clone()?;
    if Some(first.mapped) != obs.local {
        if let Some(other) = first.other {
            let both = async {
                if other.ip() == tracker.ip() {
                    None
                } else {
                    Some(binding(side, tracker, Change { ip: true, port: true }).await.is_some())
                }
            };
            let port = async { binding(side, tracker, Change { ip: false, port: true }).await.is_some() };
            let (both, port) = tokio::join!(both, port);
            obs.change_both = both;
            obs.change_port = Some(port);
            let mut dests = Vec::new();
            if other.ip() != tracker.ip() {
                dests.push(SocketAddr::new(other.ip(), tracker.port()));
                dests.push(other);
            }
            dests.push(SocketAddr::new(tracker.ip(), other.port()));
            for d in dests {
                let m = binding(side, d, Change::default()).await.map(|r| r.mapped);
                obs.mappings.push((d, m));
            }
        }
    }
    let report = classify(&obs);
    if let Some(r) = &report {
        tracing::info!(nat = %r.kind(), reflexive = %r.reflexive, "NAT classified");
    }
    report
}

/// One Binding transaction, retransmitted; the answer, or `None` if none came.
async fn binding(side: &Arc<Side>, to: SocketAddr, change: Change) -> Option<Reply> {
    let (mut rx, id) = side.stun_request(to, change)?;
    for attempt in 0..TRIES {
        if attempt > 0 {
            side.resend_stun(to, id, change);
        }
        match tokio::time::timeout(RTO, &mut rx).await {
            Ok(Ok((reply, _from))) => return Some(reply),
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    side.forget_stun(&id);
    None
}

/// The IP the OS would send from toward `to` (no packet is sent: connecting a UDP socket
/// only picks a route).
fn local_ip_toward(bound: SocketAddr, to: SocketAddr) -> std::net::IpAddr {
    if !bound.ip().is_unspecified() {
        return bound.ip();
    }
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(to)?;
            s.local_addr()
        })
        .map_or(bound.ip(), |a| a.ip())
}

/// The report the observations support (pure, so it is tested on its own).
pub(crate) fn classify(obs: &Observations) -> Option<NatReport> {
    let first = obs.first.as_ref()?;
    let local = obs.local?;
    let reflexive = first.mapped;
    let report = |reachability, classified, port_step, next_port| NatReport {
        reachability,
        classified,
        reflexive,
        local,
        port_step,
        next_port,
    };
    if reflexive == local {
        return Some(report(Reachability::Open, true, 0, reflexive.port()));
    }
    let Some(change_port) = obs.change_port else {
        // No second address to test against: assume the worst NAT, so that no pair is
        // planned to punch where it cannot.
        let worst = NatType {
            mapping: Mapping::AddressAndPortDependent,
            filtering: Filtering::AddressAndPortDependent,
            allocation: Allocation::Random,
        };
        return Some(report(Reachability::Nat(worst), false, 0, reflexive.port()));
    };
    let filtering = match (obs.change_both, change_port) {
        (Some(true), _) => Filtering::EndpointIndependent,
        (_, true) => Filtering::AddressDependent,
        _ => Filtering::AddressAndPortDependent,
    };
    let mapped: Vec<SocketAddr> = obs.mappings.iter().filter_map(|(_, m)| *m).collect();
    let mapping = if mapped.iter().all(|m| *m == reflexive) {
        Mapping::EndpointIndependent
    } else {
        // With two tracker IPs, the first two tests go to the other IP (ports differ).
        let other_ip: Vec<SocketAddr> = obs
            .mappings
            .iter()
            .filter(|(d, _)| d.ip() != obs.primary.map_or(d.ip(), |p| p.ip()))
            .filter_map(|(_, m)| *m)
            .collect();
        if other_ip.len() == 2 && other_ip[0] == other_ip[1] {
            Mapping::AddressDependent
        } else {
            Mapping::AddressAndPortDependent
        }
    };
    // Ports of the distinct mappings in the order they were made (the first one first).
    let mut ports = vec![reflexive.port()];
    for m in &mapped {
        if !ports.contains(&m.port()) {
            ports.push(m.port());
        }
    }
    let steps: Vec<i32> = ports.windows(2).map(|w| w[1] as i32 - w[0] as i32).collect();
    let (allocation, port_step, next_port) = if mapping == Mapping::EndpointIndependent {
        let a = if reflexive.port() == local.port() { Allocation::PortPreserving } else { Allocation::Random };
        (a, 0, reflexive.port())
    } else if !steps.is_empty() && steps.iter().all(|s| (1..=STEP_MAX as i32).contains(s)) {
        let step = *steps.iter().min().expect("not empty") as u16;
        let last = *ports.last().expect("not empty");
        (Allocation::Sequential, step, last.wrapping_add(step))
    } else if reflexive.port() == local.port() {
        (Allocation::PortPreserving, 0, reflexive.port())
    } else {
        (Allocation::Random, 0, reflexive.port())
    };
    Some(report(Reachability::Nat(NatType { mapping, filtering, allocation }), true, port_step, next_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn obs(mapped: &str, both: bool, port: bool, maps: &[&str]) -> Observations {
        let dests = [a("198.51.100.2:7000"), a("198.51.100.2:7001"), a("198.51.100.1:7001")];
        Observations {
            local: Some(a("10.0.1.2:5000")),
            primary: Some(a("198.51.100.1:7000")),
            first: Some(Reply { id: [0; 12], mapped: a(mapped), other: Some(a("198.51.100.2:7001")) }),
            change_both: Some(both),
            change_port: Some(port),
            mappings: maps.iter().zip(dests).map(|(m, d)| (d, Some(a(m)))).collect(),
        }
    }

    fn nat(o: &Observations) -> (NatType, u16, u16) {
        let r = classify(o).unwrap();
        let Reachability::Nat(t) = r.reachability else { panic!("{r:?}") };
        (t, r.port_step, r.next_port)
    }

    #[test]
    fn the_lab_nats_are_classified() {
        use Allocation::*;
        use Filtering as F;
        use Mapping as M;
        let m = "203.0.113.1:5000";
        let fc = nat(&obs(m, true, true, &[m, m, m]));
        assert_eq!(
            fc.0,
            NatType { mapping: M::EndpointIndependent, filtering: F::EndpointIndependent, allocation: PortPreserving }
        );
        let rc = nat(&obs(m, false, true, &[m, m, m]));
        assert_eq!(rc.0.filtering, F::AddressDependent);
        let prc = nat(&obs(m, false, false, &[m, m, m]));
        assert_eq!(
            prc.0,
            NatType {
                mapping: M::EndpointIndependent,
                filtering: F::AddressAndPortDependent,
                allocation: PortPreserving
            }
        );
        let seq = nat(&obs(
            "203.0.113.1:30000",
            false,
            false,
            &["203.0.113.1:30001", "203.0.113.1:30002", "203.0.113.1:30003"],
        ));
        assert_eq!(
            seq,
            (
                NatType {
                    mapping: M::AddressAndPortDependent,
                    filtering: F::AddressAndPortDependent,
                    allocation: Sequential
                },
                1,
                30004
            )
        );
        let rnd = nat(&obs(
            "203.0.113.1:41234",
            false,
            false,
            &["203.0.113.1:1999", "203.0.113.1:60001", "203.0.113.1:31337"],
        ));
        assert_eq!(rnd.0.allocation, Random);
        assert_eq!(rnd.0.mapping, M::AddressAndPortDependent);
        let adm = nat(&obs(
            "203.0.113.1:30000",
            false,
            false,
            &["203.0.113.1:30001", "203.0.113.1:30001", "203.0.113.1:30000"],
        ));
        assert_eq!(adm.0.mapping, M::AddressDependent);
    }

    #[test]
    fn open_and_unclassified() {
        let mut o = obs("10.0.1.2:5000", false, false, &[]);
        assert_eq!(classify(&o).unwrap().reachability, Reachability::Open);
        o.first.as_mut().unwrap().mapped = a("203.0.113.9:1");
        o.change_port = None;
        let r = classify(&o).unwrap();
        assert!(!r.classified);
        o.first = None;
        assert_eq!(classify(&o), None);
    }
}
