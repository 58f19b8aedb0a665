//! Whether two nodes can reach each other, from the pair of their NAT types (NATCracker:
//! the outcome depends on the *pair*, not on either side alone). The one place this rule
//! lives: the simulator's NAT model calls it, and so will the real NAT module.
//!
//! A NAT is described by its mapping (how it picks the external address of an outgoing
//! flow), its filtering (which inbound packets it lets through) and its port allocation
//! (how it picks the external port of a new mapping). Hole punching works when each side
//! can learn or guess the port the other uses toward it, and each side's filter lets the
//! other's packets in once it has sent toward it.

use serde::{Deserialize, Serialize};

/// How the NAT maps an internal endpoint to an external one.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mapping {
    /// One external endpoint for every destination: what STUN sees is what peers see.
    EndpointIndependent,
    /// A new external endpoint per destination address.
    AddressDependent,
    /// A new external endpoint per destination address and port ("symmetric").
    AddressAndPortDependent,
}

/// Which inbound packets the NAT lets through to a mapping.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Filtering {
    /// From anyone ("full cone").
    EndpointIndependent,
    /// From addresses the inside has sent to, any port ("restricted cone").
    AddressDependent,
    /// Only from address and port pairs the inside has sent to ("port-restricted").
    AddressAndPortDependent,
}

/// How the NAT picks the external port of a new mapping.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Allocation {
    /// The internal port, when free.
    PortPreserving,
    /// The previous allocation plus a small step: predictable.
    Sequential,
    /// Unpredictable.
    Random,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NatType {
    pub mapping: Mapping,
    pub filtering: Filtering,
    pub allocation: Allocation,
}

/// A node's reachability as STUN would classify it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reachability {
    /// A public address: anyone can dial it.
    Open,
    /// Behind a NAT of this type.
    Nat(NatType),
    /// UDP is blocked: no QUIC connection in or out, not even through a relay.
    Blocked,
}

/// How a connection between two nodes can come up.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Path {
    /// Directly, by dialing or by simultaneous hole punching.
    Direct,
    /// Only through a relay (which then carries every byte of it).
    Relay,
    /// Not at all.
    None,
}

impl NatType {
    /// True when the external port this NAT uses toward a new peer can be known in
    /// advance: the same as STUN saw (endpoint-independent mapping), or guessed from it
    /// (preserving or sequential allocation).
    pub fn predictable(&self) -> bool {
        self.mapping == Mapping::EndpointIndependent || self.allocation != Allocation::Random
    }

    /// True when this NAT, having sent toward a peer's address, accepts that peer's
    /// packets from a port it did not send to.
    pub fn accepts_any_port(&self) -> bool {
        self.filtering != Filtering::AddressAndPortDependent
    }
}

/// The pair rule: how nodes `a` and `b` can connect (symmetric in its arguments).
///
/// | a \ b | Open | NAT, predictable | NAT, unpredictable | Blocked |
/// | --- | --- | --- | --- | --- |
/// | Open | Direct | Direct | Direct | None |
/// | NAT, predictable | Direct | Direct | Direct if the predictable side accepts any port, else Relay | None |
/// | NAT, unpredictable | Direct | (as above) | Relay | None |
/// | Blocked | None | None | None | None |
///
/// A NAT'd node reaches an open one by dialing out. Two NAT'd nodes punch at once,
/// introduced by the tracker: each sends toward the port it expects the other to use.
/// When both ports are predictable, both punches meet. When one side's port is random,
/// its packets arrive from a port the other side never sent to, which only a filter that
/// ignores ports lets in. When both are random, neither can aim: only a relay helps.
pub fn traversal(a: Reachability, b: Reachability) -> Path {
    use Reachability::*;
    match (a, b) {
        (Blocked, _) | (_, Blocked) => Path::None,
        (Open, _) | (_, Open) => Path::Direct,
        (Nat(x), Nat(y)) => match (x.predictable(), y.predictable()) {
            (true, true) => Path::Direct,
            (true, false) if x.accepts_any_port() => Path::Direct,
            (false, true) if y.accepts_any_port() => Path::Direct,
            _ => Path::Relay,
        },
    }
}

/// The usual names of common NAT behaviours, as a scenario or a log would say them.
pub fn named(name: &str) -> Option<Reachability> {
    use Allocation::*;
    use Filtering as F;
    use Mapping as M;
    let nat = |mapping, filtering, allocation| Reachability::Nat(NatType { mapping, filtering, allocation });
    Some(match name {
        "open" => Reachability::Open,
        "blocked" => Reachability::Blocked,
        "full-cone" => nat(M::EndpointIndependent, F::EndpointIndependent, PortPreserving),
        "restricted-cone" => nat(M::EndpointIndependent, F::AddressDependent, PortPreserving),
        "port-restricted-cone" => nat(M::EndpointIndependent, F::AddressAndPortDependent, Random),
        "symmetric-sequential" => nat(M::AddressAndPortDependent, F::AddressAndPortDependent, Sequential),
        "symmetric" => nat(M::AddressAndPortDependent, F::AddressAndPortDependent, Random),
        _ => return None,
    })
}

/// The names [`named`] knows, for error messages.
pub const NAMES: &[&str] =
    &["open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric-sequential", "symmetric", "blocked"];

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str) -> Reachability {
        named(name).unwrap()
    }

    #[test]
    fn pair_rule_follows_the_table_and_is_symmetric() {
        let cases = [
            ("open", "symmetric", Path::Direct),
            ("full-cone", "full-cone", Path::Direct),
            ("port-restricted-cone", "symmetric-sequential", Path::Direct),
            ("full-cone", "symmetric", Path::Direct),
            ("restricted-cone", "symmetric", Path::Direct),
            ("port-restricted-cone", "symmetric", Path::Relay),
            ("symmetric-sequential", "symmetric", Path::Relay),
            ("symmetric", "symmetric", Path::Relay),
            ("blocked", "open", Path::None),
        ];
        for (a, b, want) in cases {
            assert_eq!(traversal(n(a), n(b)), want, "{a} × {b}");
            assert_eq!(traversal(n(b), n(a)), want, "{b} × {a}");
        }
        for name in NAMES {
            assert!(named(name).is_some());
        }
        assert_eq!(named("cone"), None);
    }
}
