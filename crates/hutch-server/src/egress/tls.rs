//! TLS for the egress proxy: hutch's own certificate authority, which mints a leaf
//! certificate for each host whose HTTPS traffic the proxy terminates (sandboxes trust the
//! CA), and the client side that verifies the real origin before the proxy talks to it.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The CA certificate's common name.
const CA_NAME: &str = "hutch egress CA";
/// The CA certificate's file in the CA directory.
const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file in the CA directory (mode 0600).
const CA_KEY_FILE: &str = "ca.key";
/// How long a new CA certificate is valid.
const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// How far back a certificate's validity starts: a sandbox whose clock lags the host's
/// still accepts it.
const BACKDATE: time::Duration = time::Duration::days(1);
/// How long a leaf certificate is valid.
const LEAF_VALIDITY: time::Duration = time::Duration::days(30);
/// A cached leaf older than this is minted again, long before it expires.
const LEAF_REFRESH: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The most hosts whose leaves are kept.
const LEAF_CACHE_SIZE: usize = 1024;
/// Where Debian (and the distributions like it) keep the system's trusted roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The only application protocol spoken on either side: the proxy rewrites HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";
/// The versions offered and accepted on either side.
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// hutch's egress certificate authority: made on first use and kept under `dir`
/// (`ca.pem`, and `ca.key` with mode 0600; `dir` created 0700 if missing). Loaded again on
/// restart, so the certificate sandboxes were given stays valid.
pub struct EgressCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    provider: Arc<CryptoProvider>,
    leaves: Mutex<HashMap<String, Leaf>>,
}

/// A minted leaf certificate, ready to present.
struct Leaf {
    minted: Instant,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for EgressCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The issuer holds the private key: never printed.
        f.debug_struct("EgressCa").finish_non_exhaustive()
    }
}

/// The crypto provider of every config made here, given explicitly so that no
/// process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    // rustls 0.23.48 deprecates its ring provider because ring has no post-quantum key
    // exchange; the alternative, aws-lc-rs, needs cmake to build, which CI lacks. Classical
    // X25519/P-256 key exchange is what the sandboxes' own clients would use with ring too.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

impl EgressCa {
    /// Loads the CA kept under `dir`, or makes one there if `dir` holds none.
    pub fn load_or_create(dir: &Path) -> Result<EgressCa, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let ca = match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(&cert_path, &key_path)?,
            (false, false) => Self::create(&cert_path, &key_path)?,
            // Half a CA cannot sign, and replacing the half that is left would silently
            // invalidate a certificate sandboxes may already trust: the operator decides.
            (true, false) => return Err(format!("{} is missing", key_path.display())),
            (false, true) => return Err(format!("{} is missing", cert_path.display())),
        };
        ca.check()?;
        Ok(ca)
    }

    fn create(cert_path: &Path, key_path: &Path) -> Result<EgressCa, String> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("generating the CA key: {e}"))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, CA_NAME);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("signing the CA certificate: {e}"))?;
        let cert_pem = cert.pem();
        // The key first: a certificate on disk without its key would be useless.
        write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::debug!(cert = %cert_path.display(), "egress CA created");
        Ok(EgressCa {
            cert_pem,
            issuer: Issuer::new(params, key),
            provider: provider(),
            leaves: Mutex::default(),
        })
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<EgressCa, String> {
        let cert_pem = std::fs::read_to_string(cert_path)
            .map_err(|e| format!("reading {}: {e}", cert_path.display()))?;
        let key_pem = std::fs::read_to_string(key_path)
            .map_err(|e| format!("reading {}: {e}", key_path.display()))?;
        match std::fs::metadata(key_path) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                tracing::warn!(key = %key_path.display(), "egress CA key readable by others");
            }
            _ => {}
        }
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        let key =
            KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
        // The issuer's name and key identifier come from the certificate itself, so leaves
        // chain to it exactly as it was written.
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        tracing::debug!(cert = %cert_path.display(), "egress CA loaded");
        Ok(EgressCa {
            cert_pem,
            issuer,
            provider: provider(),
            leaves: Mutex::default(),
        })
    }

    /// Mints a leaf and verifies it against the CA certificate as a client would: catches
    /// a key that is not the certificate's, or a certificate that is no CA, at start rather
    /// than on the first intercepted connection.
    fn check(&self) -> Result<(), String> {
        let name = "egress-ca-check.invalid";
        let (leaf, _) = self.mint(&SanType::DnsName(
            name.try_into().map_err(|e| format!("{e}"))?,
        ))?;
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der()?)
            .map_err(|e| format!("the egress CA certificate is no trust anchor: {e}"))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| e.to_string())?;
        let server = ServerName::try_from(name).map_err(|e| e.to_string())?;
        verifier
            .verify_server_cert(&leaf, &[], &server, &[], UnixTime::now())
            .map_err(|e| {
                format!("the egress CA's key and certificate do not work together: {e}")
            })?;
        Ok(())
    }

    fn ca_der(&self) -> Result<CertificateDer<'static>, String> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|e| e.to_string())
    }

    /// The CA certificate, PEM (what sandboxes add to their trust store).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A rustls server config presenting a leaf certificate for `host` (a DNS name, or an
    /// IPv4/IPv6 literal, which becomes an IP SAN) signed by the CA. ALPN: only "http/1.1".
    /// Leaves are cached per host (at most 1024; the oldest goes when full), valid from a
    /// day ago to 30 days ahead, and minted again once older than 7 days.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        let (key, san) = subject(host)?;
        if let Some(leaf) = self.cache().get(&key) {
            if leaf.minted.elapsed() < LEAF_REFRESH {
                return Ok(Arc::clone(&leaf.config));
            }
        }
        // Minted without the lock held: two connections racing for a new host each mint
        // one, and the later simply replaces the earlier.
        let (cert, leaf_key) = self.mint(&san)?;
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(VERSIONS)
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![cert], leaf_key)
            .map_err(|e| format!("leaf for {host}: {e}"))?;
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        let config = Arc::new(config);
        let mut leaves = self.cache();
        if leaves.len() >= LEAF_CACHE_SIZE && !leaves.contains_key(&key) {
            evict_oldest(&mut leaves);
        }
        leaves.insert(
            key,
            Leaf {
                minted: Instant::now(),
                config: Arc::clone(&config),
            },
        );
        tracing::debug!(host, "egress leaf certificate minted");
        Ok(config)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Leaf>> {
        // The map is never left half-changed, so a panic elsewhere does not spoil it.
        self.leaves.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new leaf certificate for `san` with a new key.
    fn mint(
        &self,
        san: &SanType,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("generating a leaf key: {e}"))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        // Clients match the SAN; the name only helps a person reading the certificate
        // (and X.509 caps a common name at 64 characters).
        let label = match san {
            SanType::DnsName(n) if n.as_str().len() <= 64 => n.as_str().to_string(),
            SanType::IpAddress(ip) => ip.to_string(),
            _ => "hutch egress".to_string(),
        };
        name.push(DnType::CommonName, label);
        params.distinguished_name = name;
        params.subject_alt_names = vec![san.clone()];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("signing a leaf certificate: {e}"))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((cert.der().clone(), key))
    }
}

/// The cache key and subject alternative name for `host`: an IP literal (bracketed or not)
/// becomes an IP SAN, anything else must be a DNS name (compared without case or a final
/// dot).
fn subject(host: &str) -> Result<(String, SanType), String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((ip.to_string(), SanType::IpAddress(ip)));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    rustls::pki_types::DnsName::try_from(name.as_str())
        .map_err(|_| format!("{host:?} is neither a DNS name nor an IP address"))?;
    let san = SanType::DnsName(
        name.as_str()
            .try_into()
            .map_err(|e| format!("{host:?}: {e}"))?,
    );
    Ok((name, san))
}

/// Makes room in a full cache: drops the leaf minted longest ago.
fn evict_oldest(leaves: &mut HashMap<String, Leaf>) {
    if let Some(oldest) = leaves
        .iter()
        .min_by_key(|(_, leaf)| leaf.minted)
        .map(|(host, _)| host.clone())
    {
        leaves.remove(&oldest);
    }
}

/// A random positive serial number of 16 bytes (RFC 5280 allows up to 20).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    // Cleared top bit: the DER integer stays positive without a padding byte.
    bytes[0] &= 0x7f;
    // A leading zero byte would be dropped in DER: keep the full length.
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Writes a new file with `mode` through a temporary name, so a crash leaves either
/// nothing or the whole file.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

/// A client config verifying servers against the host's system roots (the PEM bundle
/// `/etc/ssl/certs/ca-certificates.crt` if present; entries that do not parse are skipped)
/// plus the PEM certificates in `extra_roots` (a file, when given; an error if it cannot be
/// read or holds no certificate). ALPN: only "http/1.1". TLS 1.2 and 1.3.
///
/// Reading the bundle is not free: build the config once and share it.
pub fn client_config(extra_roots: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match std::fs::read(SYSTEM_ROOTS) {
        Ok(pem) => {
            let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
            let (added, skipped) = roots.add_parsable_certificates(certs);
            tracing::debug!(added, skipped, bundle = SYSTEM_ROOTS, "system roots read");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(bundle = SYSTEM_ROOTS, "no system roots");
        }
        Err(e) => return Err(format!("reading {SYSTEM_ROOTS}: {e}")),
    }
    if let Some(path) = extra_roots {
        let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let mut r = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut r);
        std::env::temp_dir().join(format!("hutch-egress-{tag}-{}", hex::encode(r)))
    }

    /// A client config trusting only the PEM certificates in `pem`, offering h2 as a
    /// browser would.
    fn trusting(pem: &str) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), ALPN_HTTP1.to_vec()];
        Arc::new(config)
    }

    /// Runs a handshake between the two configs over an in-memory pipe and has one byte
    /// cross each way; the client's error if it fails.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        let (c, s) = tokio::io::duplex(16 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let served = tokio::spawn(async move {
            let mut tls = acceptor.accept(s).await.ok()?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.ok()?;
            tls.write_all(&b).await.ok()?;
            tls.flush().await.ok()?;
            Some(())
        });
        let connector = tokio_rustls::TlsConnector::from(client);
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut tls = connector
            .connect(name, c)
            .await
            .map_err(|e| e.to_string())?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        assert_eq!(&b, b"x");
        served.await.unwrap().expect("server side");
        Ok(alpn)
    }

    #[test]
    fn the_ca_is_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<EgressCa>();
    }

    #[tokio::test]
    async fn ca_is_created_and_reloaded() {
        let dir = temp_dir("ca");
        let ca = EgressCa::load_or_create(&dir).unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let again = EgressCa::load_or_create(&dir).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        // A leaf minted by the reloaded CA chains to the certificate first written.
        let server = again.server_config("api.test").unwrap();
        handshake(server, trusting(ca.cert_pem()), "api.test")
            .await
            .unwrap();
        // Half a CA is refused rather than replaced.
        std::fs::remove_file(dir.join("ca.key")).unwrap();
        assert!(EgressCa::load_or_create(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_key_of_another_ca_is_refused() {
        let (a, b) = (temp_dir("ca-a"), temp_dir("ca-b"));
        EgressCa::load_or_create(&a).unwrap();
        EgressCa::load_or_create(&b).unwrap();
        std::fs::copy(b.join("ca.key"), a.join("ca.key")).unwrap();
        let e = EgressCa::load_or_create(&a).unwrap_err();
        assert!(e.contains("do not work together"), "{e}");
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    #[tokio::test]
    async fn leaf_is_trusted_through_the_ca_only() {
        let dir = temp_dir("leaf");
        let ca = EgressCa::load_or_create(&dir).unwrap();
        let server = ca.server_config("api.test").unwrap();
        let alpn = handshake(Arc::clone(&server), trusting(ca.cert_pem()), "api.test")
            .await
            .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        // The same host is served from the cache, names compared without case.
        assert!(Arc::ptr_eq(
            &server,
            &ca.server_config("API.test.").unwrap()
        ));
        // A client with no roots at all refuses it.
        let e = handshake(Arc::clone(&server), trusting(""), "api.test")
            .await
            .unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
        // And the leaf is for its host only.
        let e = handshake(server, trusting(ca.cert_pem()), "other.test")
            .await
            .unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn ip_literals_get_ip_sans() {
        let dir = temp_dir("ip");
        let ca = EgressCa::load_or_create(&dir).unwrap();
        for (host, name) in [("127.0.0.1", "127.0.0.1"), ("[::1]", "::1"), ("::1", "::1")] {
            let server = ca.server_config(host).unwrap();
            handshake(server, trusting(ca.cert_pem()), name)
                .await
                .unwrap();
        }
        assert!(ca.server_config("not a host").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn cache_is_bounded() {
        let dir = temp_dir("cache");
        let ca = EgressCa::load_or_create(&dir).unwrap();
        let first = ca.server_config("h0.test").unwrap();
        for i in 1..=LEAF_CACHE_SIZE {
            ca.server_config(&format!("h{i}.test")).unwrap();
        }
        assert_eq!(ca.cache().len(), LEAF_CACHE_SIZE);
        // The oldest went to make room.
        assert!(!Arc::ptr_eq(&first, &ca.server_config("h0.test").unwrap()));
        // A stale entry is minted again.
        let fresh = ca.server_config("stale.test").unwrap();
        ca.cache().get_mut("stale.test").unwrap().minted -= LEAF_REFRESH;
        assert!(!Arc::ptr_eq(
            &fresh,
            &ca.server_config("stale.test").unwrap()
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn client_config_trusts_extra_roots() {
        let (origin_dir, other_dir) = (temp_dir("origin"), temp_dir("other"));
        let origin_ca = EgressCa::load_or_create(&origin_dir).unwrap();
        let server = origin_ca.server_config("origin.test").unwrap();
        let extra = origin_dir.join("extra.pem");
        std::fs::write(&extra, origin_ca.cert_pem()).unwrap();
        let client = client_config(Some(&extra)).unwrap();
        let alpn = handshake(Arc::clone(&server), client, "origin.test")
            .await
            .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        // Without the extra root (or with another CA's) the origin is not trusted.
        let e = handshake(
            Arc::clone(&server),
            client_config(None).unwrap(),
            "origin.test",
        )
        .await
        .unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
        let other = EgressCa::load_or_create(&other_dir).unwrap();
        let other_pem = other_dir.join("other.pem");
        std::fs::write(&other_pem, other.cert_pem()).unwrap();
        assert!(handshake(
            server,
            client_config(Some(&other_pem)).unwrap(),
            "origin.test"
        )
        .await
        .is_err());
        // A file that cannot be read, or holds no certificate, is an error.
        assert!(client_config(Some(&origin_dir.join("absent.pem"))).is_err());
        let empty = origin_dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        assert!(client_config(Some(&empty)).is_err());
        std::fs::remove_dir_all(&origin_dir).unwrap();
        std::fs::remove_dir_all(&other_dir).unwrap();
    }
}
