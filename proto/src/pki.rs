//! The farm's certificates: a CA per farm, a server certificate per agent
//! (its node name as DNS name) and a client certificate per controller
//! whose organizational unit carries its role. Both sides use this module,
//! so what `farmctl certs` writes is exactly what the agent reads.
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// What a controller certificate may do on an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Status and WatchLoad.
    Viewer,
    /// Everything.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid name {0:?} for a certificate")]
    Name(String),
    #[error("not a certificate: {0}")]
    Parse(String),
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Validity, from now: `not_before` may be in the past, both may be
/// negative to make an expired certificate (for tests).
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub from_days: i64,
    pub to_days: i64,
}

impl Validity {
    pub const CA: Validity = Validity {
        from_days: -1,
        to_days: 3650,
    };
    pub const LEAF: Validity = Validity {
        from_days: -1,
        to_days: 825,
    };
}

fn params(cn: &str, ou: Option<&str>, sans: Vec<SanType>, validity: Validity) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(ou) = ou {
        dn.push(DnType::OrganizationalUnitName, ou);
    }
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    let now = OffsetDateTime::now_utc();
    p.not_before = now + Duration::days(validity.from_days);
    p.not_after = now + Duration::days(validity.to_days);
    p
}

/// A new farm CA.
pub fn new_ca(farm: &str, validity: Validity) -> Result<Pair, PkiError> {
    let key = KeyPair::generate()?;
    let mut p = params(&format!("farmctl CA {farm}"), None, Vec::new(), validity);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn san(name: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(PkiError::Name(name.into()));
    }
    Ok(SanType::DnsName(
        name.to_string()
            .try_into()
            .map_err(|_| PkiError::Name(name.into()))?,
    ))
}

fn sign(
    ca: &Pair,
    mut p: CertificateParams,
    eku: ExtendedKeyUsagePurpose,
) -> Result<Pair, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![eku];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// An agent's server certificate: valid for its node name and `extra`
/// names or IPs (the address the controller dials is checked against it).
pub fn issue_agent(
    ca: &Pair,
    node: &str,
    extra: &[String],
    validity: Validity,
) -> Result<Pair, PkiError> {
    let mut sans = vec![san(node)?];
    for e in extra {
        sans.push(san(e)?);
    }
    sign(
        ca,
        params(node, Some("agent"), sans, validity),
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

/// A controller's client certificate; its role is its OU.
pub fn issue_controller(
    ca: &Pair,
    name: &str,
    role: Role,
    validity: Validity,
) -> Result<Pair, PkiError> {
    if name.is_empty()
        || name.len() > 64
        || name.chars().any(|c| c.is_control() || c == ',' || c == '=')
    {
        return Err(PkiError::Name(name.into()));
    }
    sign(
        ca,
        params(name, Some(role.as_str()), Vec::new(), validity),
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// The serial number of a certificate (PEM), as bytes.
pub fn serial_of_pem(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    let cert = p.parse_x509().map_err(|e| PkiError::Parse(e.to_string()))?;
    Ok(cert.raw_serial().to_vec())
}

/// A certificate revocation list (PEM) signed by the CA, revoking
/// `serials`; `number` must grow with every new list. Valid for `valid`.
pub fn revocation_list(
    ca: &Pair,
    serials: &[Vec<u8>],
    number: u64,
    valid: std::time::Duration,
) -> Result<String, PkiError> {
    let valid = Duration::try_from(valid).unwrap_or(Duration::days(365));
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let now = OffsetDateTime::now_utc();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: now + valid,
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(s),
                revocation_time: now,
                reason_code: Some(rcgen::RevocationReason::Unspecified),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(&issuer)?.pem()?)
}

/// Who a client certificate (DER) says it is: subject CN and OU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub common_name: String,
    pub unit: Option<String>,
}

pub fn subject(der: &[u8]) -> Result<Subject, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let name = cert.subject();
    let common_name = name
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let unit = name
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    Ok(Subject { common_name, unit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_certificates_carry_name_and_role() {
        let ca = new_ca("t", Validity::CA).unwrap();
        let c = issue_controller(&ca, "alice", Role::Viewer, Validity::LEAF).unwrap();
        let der = x509_parser::pem::parse_x509_pem(c.cert_pem.as_bytes())
            .unwrap()
            .1
            .contents;
        assert_eq!(
            subject(&der).unwrap(),
            Subject {
                common_name: "alice".into(),
                unit: Some("viewer".into())
            }
        );
        assert!(issue_controller(&ca, "a,b=c", Role::Viewer, Validity::LEAF).is_err());
    }

    #[test]
    fn agent_certificates_name_the_node() {
        let ca = new_ca("t", Validity::CA).unwrap();
        let a = issue_agent(&ca, "web01", &["127.0.0.1".into()], Validity::LEAF).unwrap();
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issue_agent(&ca, "bad name!", &[], Validity::LEAF).is_err());
    }
}
