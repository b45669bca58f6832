//! `mtls-auth`: the client certificate presented during the TLS handshake (verified by the
//! listener against its `client_ca_file`) identifies the consumer, through an `mtls` credential
//! matching the certificate's subject common name or one of its DNS, URI or e-mail names.

use std::sync::Arc;

use gw_config::plugins::MtlsAuth as Conf;
use gw_core::{AuthOutcome, ConsumerInfo, Ctx, Plugin, RequestHead, Result, priority};

use crate::directory::Directory;
use crate::util::{invalid_credentials, missing_credentials, set_consumer};

pub(crate) struct MtlsAuth {
    skip_lookup: bool,
    dir: Arc<Directory>,
    anonymous: Option<Arc<ConsumerInfo>>,
}

impl MtlsAuth {
    pub(crate) fn new(c: &Conf, dir: Arc<Directory>) -> Self {
        MtlsAuth { skip_lookup: c.skip_consumer_lookup, anonymous: dir.anonymous(c.anonymous.as_deref()), dir }
    }
}

/// Subject CN, then DNS, URI and e-mail SANs of a DER certificate.
pub(crate) fn subject_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for g in &san.value.general_names {
            match g {
                GeneralName::DNSName(n) | GeneralName::URI(n) | GeneralName::RFC822Name(n) => names.push(n.to_string()),
                _ => {}
            }
        }
    }
    names
}

#[gw_core::plugin]
impl Plugin for MtlsAuth {
    fn name(&self) -> &'static str {
        "mtls-auth"
    }

    fn priority(&self) -> i32 {
        priority::AUTH + 300
    }

    fn anonymous(&self) -> Option<Arc<ConsumerInfo>> {
        self.anonymous.clone()
    }

    async fn authenticate(&self, _req: &mut RequestHead, cx: &mut Ctx) -> Result<AuthOutcome> {
        let Some(leaf) = cx.client_certs.as_ref().and_then(|c| c.first()).cloned() else {
            return Ok(AuthOutcome::NoCredentials { challenge: missing_credentials("") });
        };
        let names = subject_names(&leaf);
        for n in &names {
            if let Some(c) = self.dir.mtls(n).and_then(|i| self.dir.consumer(i).cloned()) {
                set_consumer(cx, c, Some(n));
                return Ok(AuthOutcome::Authenticated);
            }
        }
        if self.skip_lookup && !names.is_empty() {
            cx.credential_id = names.first().cloned();
            return Ok(AuthOutcome::Authenticated);
        }
        Ok(AuthOutcome::Rejected(invalid_credentials("")))
    }
}
