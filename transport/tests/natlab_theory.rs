//! The NAT lab's theory table (tests/natlab/theory.json) is the pair rule of
//! `meshtv_proto::nat` applied to the lab's six host types: this test derives it again and
//! fails if the file says anything else, so the lab's matrix is always checked against the
//! rule the tracker and the simulator use.

use meshtv_proto::nat::{traversal, Allocation, Filtering, Mapping, NatType, Path, Reachability};

/// The lab's host types, as its nftables rules make them (tests/natlab/run).
fn lab_types() -> Vec<(&'static str, Reachability)> {
    use Allocation::*;
    use Filtering as F;
    use Mapping as M;
    let nat = |mapping, filtering, allocation| Reachability::Nat(NatType { mapping, filtering, allocation });
    vec![
        ("open", Reachability::Open),
        ("full-cone", nat(M::EndpointIndependent, F::EndpointIndependent, PortPreserving)),
        ("restricted-cone", nat(M::EndpointIndependent, F::AddressDependent, PortPreserving)),
        ("port-restricted-cone", nat(M::EndpointIndependent, F::AddressAndPortDependent, PortPreserving)),
        ("symmetric-sequential", nat(M::AddressAndPortDependent, F::AddressAndPortDependent, Sequential)),
        ("symmetric", nat(M::AddressAndPortDependent, F::AddressAndPortDependent, Random)),
    ]
}

fn theory() -> String {
    let types = lab_types();
    let mut rows = Vec::new();
    for (i, (a, ra)) in types.iter().enumerate() {
        for (b, rb) in &types[i..] {
            let path = match traversal(*ra, *rb) {
                Path::Direct => "direct",
                Path::Relay => "relay",
                Path::None => "none",
            };
            rows.push(format!("  {{\"a\": \"{a}\", \"b\": \"{b}\", \"path\": \"{path}\"}}"));
        }
    }
    format!("[\n{}\n]\n", rows.join(",\n"))
}

#[test]
fn the_lab_theory_table_is_the_pair_rule() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/natlab/theory.json");
    let file = std::fs::read_to_string(path).unwrap_or_default();
    let want = theory();
    if std::env::var_os("NATLAB_WRITE_THEORY").is_some() {
        std::fs::write(path, &want).expect("write theory.json");
        return;
    }
    assert_eq!(file, want, "tests/natlab/theory.json is stale: rerun this test with NATLAB_WRITE_THEORY=1");
}
