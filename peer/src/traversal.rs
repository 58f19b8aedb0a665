//! A peer's side of NAT traversal: when its driver measured its NAT, every connection it
//! wants goes through a rendezvous at the tracker (which decides how the pair connects),
//! and it answers the tracker's introductions with an offer: where its packets toward the
//! new peer will come from.
//!
//! For a NAT that allocates ports in sequence that is a prediction: the port after the
//! last one STUN saw, plus one step per new destination this peer has sent to since (each
//! opens a new mapping). The peer decides every destination its driver sends to (dials
//! and the targets of the plans it is given), so it counts them here.
//!
//! Without a NAT report (the simulator, or a tracker that does not answer STUN) a peer
//! dials directly, as before.

use meshtv_proto::msg::{NatReport, Offer, PeerInfo, Plan};
use meshtv_proto::nat::{Allocation, Mapping, Reachability};
use meshtv_proto::{Msg, NodeId, Outbox};
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// Destinations remembered for the count; beyond this the count stops (and predictions
/// degrade to the punch window's tolerance).
const DESTINATIONS_MAX: usize = 4096;

#[derive(Default)]
pub struct Traversal {
    report: Option<NatReport>,
    contacted: BTreeSet<SocketAddr>,
    /// New destinations since the report.
    new_flows: u32,
}

impl Traversal {
    pub fn set_report(&mut self, report: NatReport) {
        self.report = Some(report);
        self.contacted.clear();
        self.new_flows = 0;
    }

    pub fn report(&self) -> Option<&NatReport> {
        self.report.as_ref()
    }

    /// Connects to `peer`: a dial, through a rendezvous when this peer knows its NAT.
    pub fn connect(&mut self, peer: PeerInfo, out: &mut Outbox) {
        out.dial(peer.clone());
        if self.report.is_some() {
            out.send(NodeId::TRACKER, Msg::Rendezvous { peer: peer.id, offer: Box::new(self.offer()), answer: false });
        } else {
            self.note(peer.addr);
        }
    }

    /// The tracker's plan for reaching `peer` (the driver carries it out); with `reply`,
    /// the tracker waits for this peer's offer to plan the other side.
    pub fn on_introduce(&mut self, peer: NodeId, plan: &Plan, reply: bool, out: &mut Outbox) {
        if reply && self.report.is_some() {
            // Before the plan's targets are counted: its first punch is the next mapping.
            out.send(NodeId::TRACKER, Msg::Rendezvous { peer, offer: Box::new(self.offer()), answer: true });
        }
        for t in &plan.targets {
            self.note(*t);
        }
    }

    /// Where this peer's next packets to a new destination will come from.
    pub fn offer(&self) -> Offer {
        let Some(r) = &self.report else {
            let any: SocketAddr = "0.0.0.0:0".parse().expect("literal");
            return Offer { local: any, external: any };
        };
        let external = match r.reachability {
            Reachability::Nat(t)
                if t.mapping != Mapping::EndpointIndependent && t.allocation == Allocation::Sequential =>
            {
                let ahead = (r.port_step as u32).saturating_mul(self.new_flows) as u16;
                SocketAddr::new(r.reflexive.ip(), r.next_port.wrapping_add(ahead))
            }
            _ => r.reflexive,
        };
        Offer { local: r.local, external }
    }

    fn note(&mut self, dest: SocketAddr) {
        if self.contacted.len() < DESTINATIONS_MAX && self.contacted.insert(dest) {
            self.new_flows += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequential_nat_predicts_one_step_per_new_destination() {
        let mut t = Traversal::default();
        let info = PeerInfo { id: NodeId(3), addr: "198.51.100.9:1".parse().unwrap() };
        let mut out = Outbox::default();
        t.connect(info.clone(), &mut out);
        assert_eq!(out.dials.len(), 1);
        assert!(out.sends.is_empty(), "no NAT report: a plain dial");
        t.set_report(NatReport {
            reachability: meshtv_proto::nat::named("symmetric-sequential").unwrap(),
            classified: true,
            reflexive: "203.0.113.1:30000".parse().unwrap(),
            local: "10.0.0.2:5000".parse().unwrap(),
            port_step: 1,
            next_port: 30004,
        });
        assert_eq!(t.offer().external.port(), 30004);
        let plan = Plan {
            token: 1,
            targets: vec!["198.51.100.7:1".parse().unwrap(), "198.51.100.7:2".parse().unwrap()],
            dial: true,
            punch: true,
            direct_ms: 100,
            relay: None,
        };
        let mut out = Outbox::default();
        t.on_introduce(NodeId(3), &plan, true, &mut out);
        let Msg::Rendezvous { offer, answer: true, .. } = &out.sends[0].1 else { panic!("{:?}", out.sends) };
        assert_eq!(offer.external.port(), 30004);
        assert_eq!(t.offer().external.port(), 30006);
        t.on_introduce(NodeId(3), &plan, false, &mut out);
        assert_eq!(t.offer().external.port(), 30006, "known destinations open no new mapping");
    }
}
