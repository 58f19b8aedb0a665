//! STUN on the node's socket: the Binding requests a peer sends to classify its NAT, and
//! the answers a tracker gives, in the manner of RFC 5780 (its second address and port
//! answer too, and CHANGE-REQUEST makes it answer from them).
//!
//! Two dialects arrive: RFC 5389 messages (with the magic cookie), encoded and decoded with
//! stun-rs, and classic RFC 3489 requests (a 128-bit transaction id, no cookie), which old
//! clients such as Debian's `stun` still send; those get a classic answer (MAPPED-ADDRESS,
//! SOURCE-ADDRESS, CHANGED-ADDRESS), built here because stun-rs only speaks the new one.
//!
//! Everything here parses bytes from the network: every function returns a `Result` or an
//! `Option`, never panics, and reads at most the datagram it was given.

use std::net::{IpAddr, SocketAddr};
use stun_rs::attributes::discovery::{ChangeRequest, ChangeRequestFlags, OtherAddress, ResponseOrigin};
use stun_rs::attributes::stun::{MappedAddress, Software, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder, TransactionId};

pub(crate) const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const HEADER_BYTES: usize = 20;
/// Largest STUN message we read or write; Binding messages are far smaller.
pub(crate) const STUN_BYTES_MAX: usize = 548;
const SOFTWARE: &str = "meshtv";

const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_CHANGE_REQUEST: u16 = 0x0003;
const ATTR_SOURCE_ADDRESS: u16 = 0x0004;
const ATTR_CHANGED_ADDRESS: u16 = 0x0005;
const CHANGE_IP: u32 = 0x04;
const CHANGE_PORT: u32 = 0x02;

/// Which of its addresses the server answers from, relative to where the request arrived.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Change {
    pub(crate) ip: bool,
    pub(crate) port: bool,
}

/// A transaction id in either dialect (classic ids are 16 bytes; new ones 12, after the cookie).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TxId {
    Rfc5389([u8; 12]),
    Rfc3489([u8; 16]),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stun {
    Request { id: TxId, change: Change },
    Response(Reply),
}

/// A Binding success response, as a client reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) id: [u8; 12],
    /// Where the server saw us.
    pub(crate) mapped: SocketAddr,
    /// The server's address that differs from the one we asked in IP and port (RFC 5780).
    pub(crate) other: Option<SocketAddr>,
}

/// True when a datagram starts like a STUN message (RFC 7983: first byte 0..=3).
pub(crate) fn looks_like(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_BYTES && datagram[0] < 4
}

/// Reads a STUN datagram: a Binding request (either dialect) or a Binding success response.
pub(crate) fn parse(datagram: &[u8]) -> Result<Stun, &'static str> {
    if !looks_like(datagram) || datagram.len() > STUN_BYTES_MAX {
        return Err("not a STUN message");
    }
    let body_len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    if body_len & 3 != 0 || HEADER_BYTES + body_len != datagram.len() {
        return Err("STUN length does not match the datagram");
    }
    if datagram[4..8] != MAGIC_COOKIE {
        return parse_classic(datagram);
    }
    let (msg, _) = MessageDecoderBuilder::default().build().decode(datagram).map_err(|_| "malformed STUN message")?;
    if msg.method() != BINDING {
        return Err("not a Binding message");
    }
    let id: [u8; 12] = *msg.transaction_id().as_bytes();
    match msg.class() {
        MessageClass::Request => {
            let flags = msg
                .get::<ChangeRequest>()
                .and_then(|a| a.as_change_request().ok())
                .map(|c| c.flags())
                .unwrap_or_default();
            let change = Change {
                ip: flags.contains(ChangeRequestFlags::ChangeIp),
                port: flags.contains(ChangeRequestFlags::ChangePort),
            };
            Ok(Stun::Request { id: TxId::Rfc5389(id), change })
        }
        MessageClass::SuccessResponse => {
            let xor =
                msg.get::<XorMappedAddress>().and_then(|a| a.as_xor_mapped_address().ok()).map(|a| *a.socket_address());
            let plain =
                msg.get::<MappedAddress>().and_then(|a| a.as_mapped_address().ok()).map(|a| *a.socket_address());
            let mapped = xor.or(plain).ok_or("Binding response without a mapped address")?;
            let other = msg.get::<OtherAddress>().and_then(|a| a.as_other_address().ok()).map(|a| *a.socket_address());
            Ok(Stun::Response(Reply { id, mapped, other }))
        }
        _ => Err("neither a Binding request nor a success response"),
    }
}

/// A classic (RFC 3489) Binding request: type, length, 16-byte id, then attributes of
/// which only CHANGE-REQUEST matters.
fn parse_classic(datagram: &[u8]) -> Result<Stun, &'static str> {
    if datagram[0..2] != [0x00, 0x01] {
        return Err("classic STUN message that is not a Binding request");
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&datagram[4..20]);
    let mut change = Change::default();
    let mut rest = &datagram[HEADER_BYTES..];
    // Bounded: every step consumes at least the 4-byte attribute header.
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err("truncated classic STUN attribute");
        }
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let padded = len.div_ceil(4) * 4;
        if rest.len() < 4 + padded {
            return Err("classic STUN attribute runs past the message");
        }
        if kind == ATTR_CHANGE_REQUEST {
            if len != 4 {
                return Err("CHANGE-REQUEST of the wrong length");
            }
            let flags = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
            change = Change { ip: flags & CHANGE_IP != 0, port: flags & CHANGE_PORT != 0 };
        }
        rest = &rest[4 + padded..];
    }
    Ok(Stun::Request { id: TxId::Rfc3489(id), change })
}

/// A Binding request in the RFC 5389 dialect, with CHANGE-REQUEST when asked.
pub(crate) fn request(id: [u8; 12], change: Change) -> Vec<u8> {
    use ChangeRequestFlags::{ChangeIp, ChangePort};
    let flags = match (change.ip, change.port) {
        (true, true) => Some(ChangeIp | ChangePort),
        (true, false) => Some(ChangeIp.into()),
        (false, true) => Some(ChangePort.into()),
        (false, false) => None,
    };
    let mut b = StunMessageBuilder::new(BINDING, MessageClass::Request).with_transaction_id(TransactionId::from(id));
    if flags.is_some() {
        b = b.with_attribute(ChangeRequest::new(flags));
    }
    encode(&b.build())
}

/// The answer to a Binding request from `client`, sent from `origin`; `other` is the
/// server's address that differs from `origin` in IP and port, when it has one.
pub(crate) fn response(id: TxId, client: SocketAddr, origin: SocketAddr, other: Option<SocketAddr>) -> Vec<u8> {
    match id {
        TxId::Rfc5389(id) => {
            let mut b = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
                .with_transaction_id(TransactionId::from(id))
                .with_attribute(XorMappedAddress::from(client))
                .with_attribute(MappedAddress::from(client))
                .with_attribute(ResponseOrigin::from(origin));
            if let Some(other) = other {
                b = b.with_attribute(OtherAddress::from(other));
            }
            if let Ok(s) = Software::new(SOFTWARE) {
                b = b.with_attribute(s);
            }
            encode(&b.build())
        }
        TxId::Rfc3489(id) => {
            let mut out = vec![0x01, 0x01, 0, 0];
            out.extend_from_slice(&id);
            put_address(&mut out, ATTR_MAPPED_ADDRESS, client);
            put_address(&mut out, ATTR_SOURCE_ADDRESS, origin);
            if let Some(other) = other {
                put_address(&mut out, ATTR_CHANGED_ADDRESS, other);
            }
            let len = (out.len() - HEADER_BYTES) as u16;
            out[2..4].copy_from_slice(&len.to_be_bytes());
            out
        }
    }
}

/// A classic address attribute (IPv4 only in RFC 3489; an IPv6 address is written with
/// family 2, as RFC 5389 does).
fn put_address(out: &mut Vec<u8>, kind: u16, addr: SocketAddr) {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(|| v6.octets().to_vec(), |v4| v4.octets().to_vec()),
    };
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(4 + ip.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, if ip.len() == 4 { 1 } else { 2 }]);
    out.extend_from_slice(&addr.port().to_be_bytes());
    out.extend_from_slice(&ip);
}

fn encode(msg: &stun_rs::StunMessage) -> Vec<u8> {
    let mut buf = [0u8; STUN_BYTES_MAX];
    // Our own Binding messages are a few dozen bytes: encoding cannot run out of room.
    match MessageEncoderBuilder::default().build().encode(&mut buf, msg) {
        Ok(n) => buf[..n].to_vec(),
        Err(e) => {
            tracing::error!("encoding a STUN message failed: {e:?}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn requests_and_responses_round_trip() {
        for change in [Change::default(), Change { ip: true, port: true }, Change { ip: false, port: true }] {
            let req = request([7; 12], change);
            assert_eq!(parse(&req), Ok(Stun::Request { id: TxId::Rfc5389([7; 12]), change }));
        }
        let resp = response(
            TxId::Rfc5389([9; 12]),
            addr("203.0.113.5:4000"),
            addr("198.51.100.1:7000"),
            Some(addr("198.51.100.2:7001")),
        );
        assert_eq!(
            parse(&resp),
            Ok(Stun::Response(Reply {
                id: [9; 12],
                mapped: addr("203.0.113.5:4000"),
                other: Some(addr("198.51.100.2:7001"))
            }))
        );
    }

    #[test]
    fn classic_requests_get_classic_answers() {
        // What Debian's `stun` client sends: no cookie, CHANGE-REQUEST with change IP + port.
        let req = hex("00010008015a8f3a5417a60abf7bcf31a7a550280003000400000006");
        let Ok(Stun::Request { id, change }) = parse(&req) else { panic!("not parsed") };
        assert_eq!(change, Change { ip: true, port: true });
        let resp = response(id, addr("10.1.2.3:5000"), addr("127.0.0.2:7001"), Some(addr("127.0.0.1:7000")));
        assert_eq!(&resp[0..2], &[0x01, 0x01]);
        assert_eq!(&resp[4..20], &req[4..20]);
        assert_eq!(resp.len(), HEADER_BYTES + 3 * 12);
        assert_eq!(&resp[20..32], &[0, 1, 0, 8, 0, 1, 0x13, 0x88, 10, 1, 2, 3]);
    }

    #[test]
    fn random_and_truncated_bytes_are_errors_not_panics() {
        let mut rng = rand_chacha_like(5);
        let samples = [
            request([1; 12], Change { ip: true, port: false }),
            response(TxId::Rfc5389([2; 12]), addr("1.2.3.4:5"), addr("5.6.7.8:9"), Some(addr("9.9.9.9:1"))),
            response(TxId::Rfc3489([3; 16]), addr("1.2.3.4:5"), addr("5.6.7.8:9"), None),
            hex("00010008015a8f3a5417a60abf7bcf31a7a550280003000400000006"),
        ];
        for s in &samples {
            for cut in 0..s.len() {
                let _ = parse(&s[..cut]);
            }
            for _ in 0..500 {
                let mut f = s.clone();
                let i = rng.gen_range(0..f.len());
                f[i] = rng.gen();
                let _ = parse(&f);
            }
        }
        for _ in 0..20_000 {
            let len = rng.gen_range(0..120);
            let mut f: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if f.len() >= 8 {
                f[0] = rng.gen_range(0..2);
                f[2] = 0;
                f[3] = ((f.len().saturating_sub(20)) & !3) as u8;
                if rng.gen_bool(0.5) {
                    f[4..8].copy_from_slice(&MAGIC_COOKIE);
                }
            }
            let _ = parse(&f);
        }
        assert!(parse(&[0u8; 19]).is_err());
        assert!(parse(&[0x40; 40]).is_err());
    }

    fn rand_chacha_like(seed: u64) -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(seed)
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
