//! TLS termination (`--tls-cert`, `--tls-key`): loads the PEM certificate
//! chain and private key into a rustls server configuration, for
//! deployments with no proxy in front to speak HTTPS and WSS.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::error::Error;

/// The TLS server configuration for the certificate chain in `cert_path`
/// and the private key in `key_path`, both PEM. Offers HTTP/1.1 only
/// through ALPN, the one protocol the server speaks.
pub fn acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, Error> {
    let certs = load_certificates(cert_path)?;
    let key = load_private_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|source| Error::TlsKeyPair {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Every certificate in the PEM file at `path`, in file order (the
/// server's own first, then intermediates).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(path, "certificate")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| Error::TlsBadPem {
            what: "certificate",
            path: path.to_path_buf(),
            reason: describe(err),
        })?;
    if certs.is_empty() {
        return Err(Error::TlsNoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in the PEM file
/// at `path`.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read(path, "private key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        pem::Error::NoItemsFound => Error::TlsNoPrivateKey {
            path: path.to_path_buf(),
        },
        other => Error::TlsBadPem {
            what: "private key",
            path: path.to_path_buf(),
            reason: describe(other),
        },
    })
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::TlsRead {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A PEM parse error in words.
fn describe(err: pem::Error) -> String {
    match err {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a section is missing its end line {:?}",
            String::from_utf8_lossy(&end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed section start line {:?}",
            String::from_utf8_lossy(&line)
        ),
        pem::Error::Base64Decode(reason) => format!("bad base64 inside a section ({reason})"),
        other => other.to_string(),
    }
}

/// Files for tests that need a certificate on disk.
#[cfg(test)]
pub(crate) mod test_files {
    use std::path::PathBuf;

    /// A scratch directory removed when dropped.
    pub(crate) struct Scratch(PathBuf);

    impl Scratch {
        pub(crate) fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "tickcast-tls-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        /// Writes `contents` to the file `name` in it.
        pub(crate) fn file(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }

        /// The path of `name` in it (not created).
        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_files::Scratch;
    use super::*;

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_certificate_and_key_load() {
        let dir = Scratch::new("good");
        let (cert, key) = self_signed();
        let cert = dir.file("cert.pem", &cert);
        let key = dir.file("key.pem", &key);
        assert_eq!(load_certificates(&cert).unwrap().len(), 1);
        acceptor(&cert, &key).expect("a self-signed pair is usable");
    }

    #[test]
    fn each_bad_file_is_named_with_what_is_wrong() {
        let dir = Scratch::new("bad");
        let (cert_pem, key_pem) = self_signed();
        let cert = dir.file("cert.pem", &cert_pem);
        let key = dir.file("key.pem", &key_pem);

        let missing = dir.path("nowhere.pem");
        let err = load_certificates(&missing).unwrap_err().to_string();
        assert!(
            err.contains("nowhere.pem") && err.contains("certificate"),
            "{err}"
        );
        let err = load_private_key(&missing).unwrap_err().to_string();
        assert!(
            err.contains("nowhere.pem") && err.contains("private key"),
            "{err}"
        );

        // A key where the certificate belongs, and the other way round.
        let err = load_certificates(&key).unwrap_err().to_string();
        assert!(
            err.contains("key.pem") && err.contains("no certificate"),
            "{err}"
        );
        let err = load_private_key(&cert).unwrap_err().to_string();
        assert!(
            err.contains("cert.pem") && err.contains("no private key"),
            "{err}"
        );

        let empty = dir.file("empty.pem", "");
        let err = load_certificates(&empty).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no certificate"),
            "{err}"
        );

        let cut = dir.file("cut.pem", &cert_pem[..cert_pem.len() / 2]);
        let err = load_certificates(&cut).unwrap_err().to_string();
        assert!(
            err.contains("cut.pem") && err.contains("not valid PEM"),
            "{err}"
        );

        // Another certificate's key.
        let (_, other_key) = self_signed();
        let other_key = dir.file("other-key.pem", &other_key);
        let Err(err) = acceptor(&cert, &other_key) else {
            panic!("a certificate with another's key must be refused");
        };
        let err = err.to_string();
        assert!(
            err.contains("cert.pem") && err.contains("other-key.pem"),
            "{err}"
        );
    }
}
