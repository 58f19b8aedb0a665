//! TLS for QUIC: a fresh self-signed identity per node, and a client that accepts any
//! server certificate.
//!
//! **Why accepting any certificate is sound here.** meshtv does not authenticate peers
//! with TLS, and does not need to for the media: every segment header is signed by the
//! broadcaster's ed25519 key and every piece is checked against the BLAKE3 hash in that
//! signed header before it is stored, forwarded or played. Whoever sits at the other end
//! of a connection can at worst send bytes that get rejected (and get itself reported as
//! a bad peer). What TLS gives us is encryption on the wire and QUIC itself: reliable,
//! congestion-controlled, multiplexed streams. The handshake signature is still verified,
//! so the server does hold the key of the certificate it shows.
//!
//! The [`NodeId`](meshtv_proto::NodeId) in the transport hello is therefore a claim, not
//! a proof. Making it a proof would take ids derived from a key the node holds (e.g. the
//! hash of its certificate's public key), checked here against the TLS session.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// The ALPN protocol id: a non-meshtv QUIC client is turned away in the handshake.
pub const ALPN: &[u8] = b"meshtv/1";
/// The name in every node's certificate and in every dial (checked by nobody, see above).
pub const SERVER_NAME: &str = "meshtv";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side: a certificate generated now, valid for [`SERVER_NAME`], TLS 1.3 only
/// (QUIC requires it).
pub fn server_crypto() -> anyhow::Result<rustls::ServerConfig> {
    let identity = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
    let cert = identity.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pair.serialize_der()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The client side: any server certificate is accepted (see the module documentation).
pub fn client_crypto() -> anyhow::Result<rustls::ClientConfig> {
    let provider = provider();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert { provider }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// Accepts every server certificate, but still checks the handshake signatures against
/// it. Sound for meshtv because content is authenticated end to end by the broadcaster's
/// signature, not by the channel it arrives on (see the module documentation).
#[derive(Debug)]
struct AnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
