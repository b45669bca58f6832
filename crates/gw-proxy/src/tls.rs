//! TLS with rustls (aws-lc-rs): server configs with SNI-selected certificates, and upstream
//! client configs with verification on by default.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use gw_config::model::{Certificate, ListenerTls, UpstreamTls};

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())).clone()
}

fn certified_key(c: &Certificate) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&c.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate {:?}: bad PEM: {e}", c.name))?;
    let key = PrivateKeyDer::from_pem_slice(c.key_pem.expose().as_bytes())
        .map_err(|e| format!("certificate {:?}: bad private key: {e}", c.name))?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("certificate {:?}: unsupported private key: {e}", c.name))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| format!("certificate {:?}: key does not match certificate: {e}", c.name))?;
    Ok(Arc::new(ck))
}

/// Picks a certificate by SNI: exact name, then `*.` wildcard of the parent domain, then the
/// listener's default.
#[derive(Debug)]
pub(crate) struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn lookup(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return k.clone();
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(hello.server_name()))
    }
}

/// Build the rustls server config of a TLS listener.
pub(crate) fn server_config(
    tls: &ListenerTls,
    certs: &[Certificate],
    http2: bool,
) -> Result<Arc<ServerConfig>, String> {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut by_index = HashMap::new();
    for &i in &tls.certificates {
        let c = certs.get(i).ok_or("certificate index out of range")?;
        let ck = certified_key(c)?;
        for sni in &c.snis {
            match sni.strip_prefix("*.") {
                Some(parent) => {
                    wildcard.entry(parent.to_string()).or_insert_with(|| ck.clone());
                }
                None => {
                    exact.entry(sni.clone()).or_insert_with(|| ck.clone());
                }
            }
        }
        by_index.insert(i, ck);
    }
    let default = match by_index.get(&tls.default_certificate) {
        Some(k) => k.clone(),
        None => certified_key(certs.get(tls.default_certificate).ok_or("default certificate missing")?)?,
    };
    let resolver = Arc::new(SniResolver { exact, wildcard, default });
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls.tls13_only { &[&rustls::version::TLS13] } else { &[&rustls::version::TLS12, &rustls::version::TLS13] };
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions).map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| format!("client_ca_file: bad PEM: {e}"))?;
                roots.add(c).map_err(|e| format!("client_ca_file: {e}"))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = if tls.client_cert_required { v } else { v.allow_unauthenticated() };
            builder.with_client_cert_verifier(v.build().map_err(|e| format!("client_ca_file: {e}"))?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(resolver);
    cfg.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(cfg))
}

fn native_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            for c in loaded.certs {
                let _ = roots.add(c);
            }
            Arc::new(roots)
        })
        .clone()
}

/// Build the rustls client config used towards an upstream.
pub(crate) fn client_config(tls: &UpstreamTls, http2: bool) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let builder = if !tls.verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        let roots = match &tls.ca_pem {
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem) {
                    let c = c.map_err(|e| format!("ca_file: bad PEM: {e}"))?;
                    roots.add(c).map_err(|e| format!("ca_file: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("ca_file holds no certificate".into());
                }
                Arc::new(roots)
            }
            None => native_roots(),
        };
        builder.with_root_certificates(roots)
    };
    let mut cfg = match &tls.client_cert {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client_cert_file: {e}"))?;
            let key =
                PrivateKeyDer::from_pem_slice(key.expose().as_bytes()).map_err(|e| format!("client_key_file: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = if http2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(cfg))
}

/// The server name to present and verify: the configured SNI, else the target host.
pub(crate) fn server_name(tls_sni: Option<&str>, host: &str) -> Result<ServerName<'static>, String> {
    let name = tls_sni.unwrap_or(host);
    ServerName::try_from(name.to_string()).map_err(|e| format!("invalid TLS server name {name:?}: {e}"))
}

/// Accepts any upstream certificate (`tls.verify: false`): signatures are still checked so the
/// handshake is well-formed, but the chain and name are not.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
