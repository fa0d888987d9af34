//! Let's Encrypt's test CA for the HTTPS tests: Debian's `pebble`, with
//! `pebble-challtestsrv` as the DNS it resolves names with, both on
//! loopback ports of their own. Pebble's roots change at every start; its
//! management port says which they are.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::ChildGuard;

/// A running pebble and its DNS.
#[derive(Debug)]
pub struct Pebble {
    dir: tempfile::TempDir,
    /// The ACME directory's URL.
    pub directory: String,
    /// Pebble's own HTTPS certificate's CA, for `--acme-ca-file`.
    pub ca_file: PathBuf,
    management: u16,
    dns_management: u16,
    _dns: ChildGuard,
    _pebble: ChildGuard,
}

/// A free TCP port on 127.0.0.1 (free when asked: the OS may hand it out again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pebble {
    /// Starts both. Pebble probes HTTP-01 challenges on `http_port` of the
    /// address its DNS gives (`default_ip` for names not set otherwise);
    /// its certificates live `validity` long.
    pub fn start(http_port: u16, default_ip: &str, validity: Duration) -> Pebble {
        let dir = crate::temp_dir();
        // Pebble's HTTPS, with a certificate made here (its package has none).
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_file = dir.path().join("pebble-https.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        std::fs::write(dir.path().join("pebble-key.pem"), key.serialize_pem()).unwrap();
        let (listen, management) = (free_port(), free_port());
        let (dns, dns_management) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": ca_file,
            "privateKey": dir.path().join("pebble-key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity.as_secs(),
        }});
        let config_file = dir.path().join("pebble.json");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let log = |name: &str| {
            std::fs::File::create(dir.path().join(name)).expect("a log file in the temp dir")
        };
        let dns_guard = ChildGuard::spawn(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{dns_management}")])
                .args(["-defaultIPv4", default_ip, "-defaultIPv6", ""])
                .stdout(log("challtestsrv.log"))
                .stderr(Stdio::null()),
        );
        let pebble = ChildGuard::spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(&config_file)
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                // No random sleeps, no rejected nonces, and every order
                // proves its names again (no authorization reuse).
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdout(log("pebble.log"))
                .stderr(Stdio::null()),
        );
        let pebble = Pebble {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            ca_file,
            management,
            dns_management,
            dir,
            _dns: dns_guard,
            _pebble: pebble,
        };
        crate::eventually_blocking("pebble to answer", Duration::from_secs(20), || {
            pebble
                .curl(&pebble.directory)
                .filter(|dir| dir.contains("newOrder"))
        });
        pebble
    }

    fn curl(&self, url: &str) -> Option<String> {
        let output = Command::new("curl")
            .args(["-fsS", "--max-time", "5", "--cacert"])
            .arg(&self.ca_file)
            .arg(url)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The root that signs what pebble issues now (it changes at every start).
    pub fn root_pem(&self) -> String {
        self.curl(&format!("https://127.0.0.1:{}/roots/0", self.management))
            .expect("pebble's management port gives its root")
    }

    /// Makes the CA's DNS answer `name` with `ip`.
    pub fn resolve(&self, name: &str, ip: &str) {
        let body = serde_json::json!({"host": format!("{name}."), "addresses": [ip]});
        let output = Command::new("curl")
            .args(["-fsS", "--max-time", "5", "-d"])
            .arg(body.to_string())
            .arg(format!("http://127.0.0.1:{}/add-a", self.dns_management))
            .output()
            .unwrap();
        assert!(output.status.success(), "challtestsrv add-a {name}");
    }

    /// What pebble has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}
