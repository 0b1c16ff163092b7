//! `redtether-pki`: the certificates of the tunnel — the hub's CA, the hub's server
//! certificate, device keys, CSRs and device certificates, fingerprints, reading names and
//! validity back out of them — and the rustls configurations both ends build from them
//! ([`tls`]). Everything is ECDSA P-256, made with rcgen, with explicit validity (rcgen's
//! default is 1975–4096). No I/O: PEM text in, PEM text and configurations out.

pub mod quic;
pub mod tls;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen could not make or sign a certificate.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM or DER input is not what it should be.
    #[error("{0}")]
    Invalid(String),
}

/// SHA-256 of a certificate's DER, lower-case hex: what `ca-fingerprint` prints and `enroll
/// --ca-fingerprint` pins.
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// Accepts a fingerprint as hex with or without colons, any case.
pub fn normalise_fingerprint(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// The DER of the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| PkiError::Invalid(format!("not a PEM certificate: {e}")))
}

fn validity(params: &mut CertificateParams, now: SystemTime, lifetime: Duration) {
    // A little slack before now: device clocks are often a few minutes behind. At most a tenth
    // of the lifetime, so that 2/3 of the validity period (when devices renew) is always still
    // ahead: a short-lived certificate is not due for renewal the moment it is issued.
    let slack = Duration::from_secs(3600).min(lifetime / 10);
    params.not_before = (now - slack).into();
    params.not_after = (now + lifetime).into();
}

/// The hub's certificate authority: a self-signed CA certificate and its key, as PEM.
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn create(now: SystemTime, lifetime: Duration) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "redtether hub CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params, now, lifetime);
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    pub fn der(&self) -> Result<Vec<u8>, PkiError> {
        pem_to_der(&self.cert_pem)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, key)?)
    }

    /// A server certificate for the hub, valid for `names` (DNS names or IP addresses).
    pub fn issue_server(
        &self,
        names: &[String],
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, "redtether hub");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, now, lifetime);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A certificate a hub of a cluster presents to the others, as server and as client, for
    /// `name` (from the cluster's own CA, which issues nothing else).
    pub fn issue_peer(&self, name: &str, now: SystemTime, lifetime: Duration) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, now, lifetime);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A client certificate for `device_id` with the public key of `csr_pem`. Nothing else of
    /// the request is used: name, extensions and validity are the hub's.
    pub fn sign_device_csr(
        &self,
        csr_pem: &str,
        device_id: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Invalid(format!("certificate request: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, device_id);
        params.subject_alt_names = vec![SanType::URI(format!("urn:redtether:device:{device_id}").try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut serial = [0u8; 16];
        rand::fill(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(serial.to_vec().into());
        validity(&mut params, now, lifetime);
        csr.params = params;
        Ok(csr.signed_by(&self.issuer()?)?.pem())
    }
}

/// A new device key (ECDSA P-256) and a CSR for it, both PEM. The key never leaves the device.
pub fn device_key_and_csr() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let params = CertificateParams::default();
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// What the tunnel needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: Option<String>,
    pub serial_hex: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The certified public key, as SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
}

pub fn cert_info(der: &[u8]) -> Result<CertInfo, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Invalid(format!("certificate: {e}")))?;
    let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
    let to_time =
        |t: x509_parser::time::ASN1Time| SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
    Ok(CertInfo {
        common_name,
        serial_hex: hex::encode(cert.raw_serial()),
        not_before: to_time(cert.validity().not_before),
        not_after: to_time(cert.validity().not_after),
        spki_der: cert.public_key().raw.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn device_certificates_name_the_device_and_ignore_what_the_csr_asks() {
        let now = SystemTime::now();
        let ca = Ca::create(now, 3650 * DAY).unwrap();
        let (_key, csr) = device_key_and_csr().unwrap();
        let cert = ca.sign_device_csr(&csr, "pump-7", now, 90 * DAY).unwrap();
        let info = cert_info(&pem_to_der(&cert).unwrap()).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("pump-7"));
        let days = info.not_after.duration_since(info.not_before).unwrap().as_secs() / 86400;
        assert!((90..=91).contains(&days), "{days} days");
        assert_eq!(info.serial_hex.len(), 32);
    }

    #[test]
    fn ca_validity_is_explicit() {
        let now = SystemTime::now();
        let ca = Ca::create(now, 3650 * DAY).unwrap();
        let info = cert_info(&ca.der().unwrap()).unwrap();
        assert!(info.not_after > now + 3649 * DAY && info.not_after < now + 3651 * DAY);
    }

    #[test]
    fn fingerprints_normalise() {
        let f = "AB:".repeat(31) + "CD";
        assert_eq!(normalise_fingerprint(&f).unwrap(), "ab".repeat(31) + "cd");
        assert!(normalise_fingerprint("abc").is_none());
        assert!(normalise_fingerprint(&"zz".repeat(32)).is_none());
    }

    #[test]
    fn garbage_csr_is_an_error_not_a_panic() {
        let ca = Ca::create(SystemTime::now(), DAY).unwrap();
        assert!(
            ca.sign_device_csr(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                "d",
                SystemTime::now(),
                DAY
            )
            .is_err()
        );
        assert!(ca.sign_device_csr("hello", "d", SystemTime::now(), DAY).is_err());
    }
}
