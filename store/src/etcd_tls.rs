//! Client TLS for an etcd that only Paz may reach: a CA, the server's
//! certificate and the client certificate Paz connects with, made once into
//! a directory only Paz's user can read. Who cannot read the client key gets
//! no answer from etcd (`--client-cert-auth`), however they reach its port.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files a client presents and checks the server with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsFiles {
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// The client certificate and its key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The client files in `dir`, as [`EtcdTls::ensure`] makes them.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client-key.pem"),
        }
    }
}

/// The certificates of one local etcd, in one directory.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    dir: PathBuf,
}

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EtcdTlsError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make etcd's certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

impl EtcdTls {
    /// The certificates in `dir` (mode 0700), made there first if missing;
    /// etcd's is for 127.0.0.1, localhost and `hosts` (names or addresses).
    pub fn ensure(dir: &Path, hosts: &[String]) -> Result<EtcdTls, EtcdTlsError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EtcdTlsError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let tls = EtcdTls {
            dir: dir.to_path_buf(),
        };
        let all = [
            tls.client().ca,
            tls.client().cert,
            tls.client().key,
            tls.server_cert(),
            tls.server_key(),
        ];
        if all.iter().all(|path| path.is_file()) {
            return Ok(tls);
        }
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "paz local etcd CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let server_key = KeyPair::generate()?;
        let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        names.extend(hosts.iter().cloned());
        let mut server_params = CertificateParams::new(names)?;
        // Also its peer certificate: a member is the client of the others.
        server_params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        server_params
            .distinguished_name
            .push(DnType::CommonName, "paz local etcd");
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let client_key = KeyPair::generate()?;
        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client_params
            .distinguished_name
            .push(DnType::CommonName, "paz");
        let client_cert = client_params.signed_by(&client_key, &issuer)?;

        // Keys first, the CA last: a crash midway leaves no CA, so it is all made again.
        let files = [
            (tls.server_key(), server_key.serialize_pem()),
            (tls.server_cert(), server_cert.pem()),
            (tls.client().key, client_key.serialize_pem()),
            (tls.client().cert, client_cert.pem()),
            (tls.client().ca, ca_cert.pem()),
        ];
        for (path, text) in files {
            write_private(&path, text.as_bytes()).map_err(io(&path))?;
        }
        Ok(tls)
    }

    /// What Paz connects with.
    pub fn client(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.dir)
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
}

/// Writes `bytes` to `path` (mode 0600) whole.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    support::write_private_file(path, bytes)
}
