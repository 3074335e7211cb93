//! TLS to PostgreSQL with rustls (ring provider): the `sslmode` choices libpq offers,
//! root certificates from the system store or a file, and a small [`MakeTlsConnect`]
//! so every connection of the backplane goes through one connector.
//!
//! Written here rather than taken from `tokio-postgres-rustls`: that crate's current
//! release pulls in an X.509 parsing stack only to pick the channel-binding hash, and
//! offers no way to check the chain without the host name (`verify-ca`). The whole
//! connector is a few dozen lines over `tokio-rustls`.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use backplane_core::BackplaneError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::Socket;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// Whether and how connections use TLS; libpq's `sslmode`, read from the connection
/// string (`?sslmode=verify-full` or `sslmode=verify-full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Plain TCP. A server whose `pg_hba.conf` has only `hostssl` lines refuses it.
    Disable,
    /// TLS if the server offers it, plain otherwise; the certificate is not checked
    /// (unless [`PostgresOptions::ssl_root_cert`](crate::PostgresOptions::ssl_root_cert)
    /// names a file, as libpq does). Protects against passive eavesdropping only: an
    /// attacker in the path can pose as the server, or make it look as if TLS were
    /// unavailable. libpq's default, and ours.
    #[default]
    Prefer,
    /// TLS or nothing, without checking the certificate (unless a root certificate file
    /// is given: then the chain is checked, as with `VerifyCa`). Encrypts, but an
    /// attacker in the path can pose as the server.
    Require,
    /// TLS, and the server's certificate must chain to a trusted root (the file, or the
    /// system store). The host name is not compared: any certificate from that CA is
    /// accepted, so use it with a private CA only.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to (the `host`
    /// of the connection string, not `hostaddr`). What managed databases recommend.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling (`verify-full`).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The mode tokio-postgres enforces during the TLS negotiation; the certificate
    /// checks are this module's.
    pub(crate) fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = BackplaneError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(BackplaneError::Config(
                    "sslmode=allow is not supported (it tries plain TCP first); use disable, prefer, require, verify-ca or verify-full".into(),
                ));
            }
            other => {
                return Err(BackplaneError::Config(format!(
                    "invalid sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }
}

/// Where the certificates that may sign the server's certificate come from; libpq's
/// `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslRootCert {
    /// The operating system's store (`/etc/ssl/certs` and friends, or `SSL_CERT_FILE`),
    /// read once per process (`sslrootcert=system`).
    System,
    /// The PEM certificates in this file (`sslrootcert=/path/ca.pem`), read at each
    /// connect so a rotated file takes effect without a restart.
    File(PathBuf),
}

impl fmt::Display for SslRootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SslRootCert::System => f.write_str("the system certificate store"),
            SslRootCert::File(path) => write!(f, "sslrootcert {}", path.display()),
        }
    }
}

/// What the verifier checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Nothing: encryption without authentication (`prefer`, `require`).
    Nothing,
    /// The chain up to a trusted root, not the name (`verify-ca`, or a root file given).
    Chain,
    /// The chain and the host name (`verify-full`).
    ChainAndHost,
}

fn check_for(mode: SslMode, root: Option<&SslRootCert>) -> Check {
    match (mode, root) {
        (SslMode::VerifyFull, _) => Check::ChainAndHost,
        (SslMode::VerifyCa, _) | (_, Some(SslRootCert::File(_))) => Check::Chain,
        _ => Check::Nothing,
    }
}

/// The system's root certificates, loaded once per process.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "no CA certificates found in the system store ({}); install the ca-certificates package, set SSL_CERT_FILE, or give sslrootcert=/path/to/ca.pem",
                    if errors.is_empty() { "it is empty".to_owned() } else { errors.join("; ") }
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// The certificates of a PEM file.
fn file_roots(path: &std::path::Path) -> Result<Arc<RootCertStore>, String> {
    let what = || format!("cannot read sslrootcert {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("{}: {error}", what()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: {error}", what()))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "{}: no PEM certificate in it (it should hold the CA certificates that sign the server's certificate)",
            what()
        ));
    }
    Ok(Arc::new(roots))
}

/// The connector for `mode` and `root`, which every connection of the backplane uses.
///
/// # Errors
///
/// A message saying what to fix when the root certificates cannot be loaded.
pub(crate) fn connector(
    mode: SslMode,
    root: Option<&SslRootCert>,
) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let check = if mode == SslMode::Disable {
        Check::Nothing
    } else {
        check_for(mode, root)
    };
    let chain = match (check, root) {
        (Check::Nothing, _) => None,
        (_, Some(SslRootCert::File(path))) => Some(file_roots(path)?),
        (_, Some(SslRootCert::System) | None) => Some(system_roots()?),
    };
    let chain = chain
        .map(|roots| {
            WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|error| format!("building the certificate verifier: {error}"))
        })
        .transpose()?;
    let verifier = Arc::new(PostgresVerifier {
        chain,
        check,
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("configuring TLS: {error}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // PostgreSQL 17 checks the ALPN of direct TLS connections; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(MakeRustlsConnect {
        config: Arc::new(config),
        check,
    })
}

/// Checks the server's certificate as the [`SslMode`] asks; the handshake signatures
/// are always checked (they prove the server holds the certificate's key).
#[derive(Debug)]
struct PostgresVerifier {
    /// The chain verifier over the trusted roots; `None` when nothing is checked.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// What is checked.
    check: Check,
    /// The signature algorithms for the handshake.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PostgresVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the chain before the name: a name error means the chain is
            // good, which is all verify-ca asks.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == Check::Chain => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Makes one [`RustlsConnect`] per connection attempt; tokio-postgres calls it with the
/// connection string's `host`.
#[derive(Clone)]
pub(crate) struct MakeRustlsConnect {
    /// Shared by every connection made with these options.
    config: Arc<ClientConfig>,
    /// What the verifier checks, to refuse `verify-full` without a host name.
    check: Check,
}

impl fmt::Debug for MakeRustlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeRustlsConnect")
            .field("check", &self.check)
            .finish_non_exhaustive()
    }
}

impl MakeTlsConnect<Socket> for MakeRustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        let name = if domain.is_empty() {
            if self.check == Check::ChainAndHost {
                return Err(io::Error::other(
                    "sslmode=verify-full needs a host name to check the certificate against; give host (hostaddr alone cannot be checked)",
                ));
            }
            // Not compared with anything: the certificate's name is not checked.
            ServerName::try_from("postgresql.invalid").expect("a valid DNS name")
        } else {
            ServerName::try_from(domain.to_owned()).map_err(|error| {
                io::Error::other(format!(
                    "host {domain:?} is not a valid TLS server name: {error}"
                ))
            })?
        };
        Ok(RustlsConnect {
            config: self.config.clone(),
            name,
        })
    }
}

/// One TLS handshake on a connected socket.
#[derive(Debug)]
pub(crate) struct RustlsConnect {
    /// The client configuration, shared.
    config: Arc<ClientConfig>,
    /// The name to check the certificate against (and send as SNI).
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let stream = connector.connect(self.name, stream).await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// An established TLS connection to PostgreSQL.
#[derive(Debug)]
pub(crate) struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tokio_postgres::tls::TlsStream for RustlsStream {
    /// `tls-server-end-point` (RFC 5929): a hash of the server's certificate, so SCRAM
    /// authentication fails if someone in the middle terminates TLS.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        match session.peer_certificates().and_then(|certs| certs.first()) {
            Some(cert) => {
                let digest = ring::digest::digest(end_point_hash(cert), cert.as_ref());
                ChannelBinding::tls_server_end_point(digest.as_ref().to_vec())
            }
            None => ChannelBinding::none(),
        }
    }
}

/// The hash RFC 5929 prescribes for `cert`: its signature's hash, SHA-256 for MD5 and
/// SHA-1 (and for anything unrecognised, which then fails SCRAM loudly rather than
/// silently weakening it).
fn end_point_hash(cert: &[u8]) -> &'static ring::digest::Algorithm {
    // The DER encodings of the signature algorithm identifiers that use SHA-384/512:
    // ecdsa-with-SHA384/512 and sha384/512WithRSAEncryption.
    const SHA384: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
    ];
    const SHA512: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
    ];
    let Some(oid) = signature_algorithm(cert) else {
        return &ring::digest::SHA256;
    };
    if SHA384.contains(&oid) {
        &ring::digest::SHA384
    } else if SHA512.contains(&oid) {
        &ring::digest::SHA512
    } else {
        &ring::digest::SHA256
    }
}

/// The OID of a certificate's outer `signatureAlgorithm`: `Certificate ::= SEQUENCE {
/// tbsCertificate, signatureAlgorithm SEQUENCE { OID, ... }, signature }`.
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    /// One DER element at the start of `input`: (tag, contents, rest).
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, input) = input.split_first()?;
        let (&first, mut input) = input.split_first()?;
        let length = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || input.len() < count {
                return None;
            }
            let (bytes, rest) = input.split_at(count);
            input = rest;
            bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
        };
        (input.len() >= length).then(|| (tag, &input[..length], &input[length..]))
    }
    let (_, certificate, _) = element(cert)?;
    let (_, _, after_tbs) = element(certificate)?;
    let (_, algorithm, _) = element(after_tbs)?;
    let (tag, oid, _) = element(algorithm)?;
    (tag == 0x06).then_some(oid)
}

/// A hint for a connect error caused by TLS, naming what to change; `None` for other
/// errors.
pub(crate) fn hint(
    error: &tokio_postgres::Error,
    mode: SslMode,
    root: Option<&SslRootCert>,
) -> Option<String> {
    let roots = root.map_or_else(|| SslRootCert::System.to_string(), ToString::to_string);
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(current) = source {
        // tokio-rustls wraps the rustls error in an io::Error, whose `source` skips it.
        let inner = current
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .map_or(current, |inner| inner as &(dyn std::error::Error + 'static));
        if let Some(rustls::Error::InvalidCertificate(reason)) = inner.downcast_ref() {
            return Some(match reason {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "sslmode={mode}: the server's certificate is not signed by a CA in {roots}; set sslrootcert to the CA certificate that signed it"
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "sslmode=verify-full: the server's certificate does not name the host connected to; connect with a host name the certificate lists, or reissue the certificate".to_owned()
                }
                _ => format!("sslmode={mode}: the server's certificate was rejected"),
            });
        }
        source = current.source();
    }
    if let Some(db) = error.as_db_error()
        && db.code().code() == "28000"
        && db.message().contains("no encryption")
    {
        return Some(format!(
            "the server accepts this connection only over TLS, and sslmode={mode}; use sslmode=require, or verify-full with sslrootcert"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_libpq_spells_them() {
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(mode.as_str().parse::<SslMode>().unwrap(), mode);
        }
        assert!("allow".parse::<SslMode>().is_err());
        assert!("verify_full".parse::<SslMode>().is_err());
    }

    #[test]
    fn what_each_mode_checks() {
        let file = SslRootCert::File("/ca.pem".into());
        assert_eq!(check_for(SslMode::Require, None), Check::Nothing);
        assert_eq!(check_for(SslMode::Prefer, None), Check::Nothing);
        // As libpq: a root certificate file makes require verify the chain.
        assert_eq!(check_for(SslMode::Require, Some(&file)), Check::Chain);
        assert_eq!(check_for(SslMode::VerifyCa, None), Check::Chain);
        assert_eq!(
            check_for(SslMode::VerifyFull, Some(&file)),
            Check::ChainAndHost
        );
    }

    #[test]
    fn the_signature_algorithm_is_found_in_a_certificate() {
        // Certificate { tbs { 02 01 05 }, algorithm { OID ecdsa-with-SHA384 }, bits }
        let cert = [
            0x30, 0x15, 0x30, 0x03, 0x02, 0x01, 0x05, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
            0xce, 0x3d, 0x04, 0x03, 0x03, 0x03, 0x02, 0x00, 0x00,
        ];
        assert_eq!(
            end_point_hash(&cert) as *const _,
            &ring::digest::SHA384 as *const _
        );
        assert_eq!(
            end_point_hash(&[0x30, 0x00]) as *const _,
            &ring::digest::SHA256 as *const _
        );
    }
}
