//! HTTPS as users get it: certificates from Let's Encrypt's test CA
//! (Debian's pebble, with pebble-challtestsrv as its DNS) ordered by one
//! edge host while the CA's probe reaches another, renewed under load, a
//! refused name backed off; certificates brought by hand; redirects and
//! HSTS; and TLS input that is not a good client's. Real curl, real TLS.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{paz, said, spawn_until, start, start_role};
use tests::pebble::Pebble;
use tests::{DockerCleanup, SshIdentity};

/// An app whose `/cgi-bin/env` says how the proxy told it the request came.
fn proto_app() -> tempfile::TempDir {
    let dir = tests::temp_dir();
    let cgi = dir.path().join("www/cgi-bin");
    std::fs::create_dir_all(&cgi).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "hello over tls\n").unwrap();
    std::fs::write(
        cgi.join("env"),
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"proto=$HTTP_X_FORWARDED_PROTO\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM paz/busybox:latest\nCOPY www /www\nRUN chmod +x /www/cgi-bin/env\nEXPOSE 5000\nCMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n",
    )
    .unwrap();
    dir
}

/// What one curl over HTTPS saw.
#[derive(Debug)]
struct Seen {
    ok: bool,
    body: String,
    /// `2` or `1.1`.
    version: String,
    /// curl -v's lines about the server's certificate and headers.
    verbose: String,
}

impl Seen {
    /// The served certificate's expiry as curl prints it.
    fn expiry(&self) -> Option<String> {
        self.verbose.lines().find_map(|line| {
            line.split_once("expire date: ")
                .map(|(_, at)| at.trim().to_string())
        })
    }
}

/// `curl https://NAME:PORT/PATH` to `ip`, trusting `ca`.
fn https(ca: &Path, name: &str, ip: &str, port: u16, path: &str) -> Seen {
    let output = Command::new("curl")
        .args(["-sS", "-v", "--http2", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:{ip}"))
        .args(["-w", "\n%{http_version}"])
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, version) = text.rsplit_once('\n').unwrap_or((&text, ""));
    Seen {
        ok: output.status.success(),
        body: body.to_string(),
        version: version.to_string(),
        verbose: String::from_utf8_lossy(&output.stderr).to_string(),
    }
}

/// A plain HTTP/1.1 request: the status line and headers, and the body.
fn plain(ip: &str, port: u16, host: &str, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect((ip, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // One write, and its failure is no failure: a TLS port closes on the
    // first bytes that are not TLS, maybe before all are written.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes());
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.to_string(), body.to_string())
}

/// A port free on both 127.0.0.1 and 127.0.0.2: both edges' HTTP port,
/// which is the one the CA probes.
fn port_on_both() -> u16 {
    loop {
        let port = tests::pebble::free_port();
        if std::net::TcpListener::bind(("127.0.0.2", port)).is_ok() {
            return port;
        }
    }
}

/// `certs:list --json`'s row for `domain`.
fn cert_row(list: &str, domain: &str) -> Option<serde_json::Value> {
    let rows: serde_json::Value = serde_json::from_str(list).unwrap();
    rows.as_array()?
        .iter()
        .find(|row| row["domain"] == domain)
        .cloned()
}

/// How many times the CA was asked to validate `name`: one authorization
/// per order, as pebble logs them.
fn validations(pebble: &Pebble, name: &str) -> usize {
    pebble
        .log()
        .lines()
        .filter(|line| line.contains("Pulled a task from the Tasks queue") && line.contains(name))
        .count()
}

/// A new key that `admin` adds as deployer `name` of `app`.
fn deployer(admin: &SshIdentity, ssh_port: u16, name: &str, app: &str) -> SshIdentity {
    let key = SshIdentity::new("ed25519");
    let public = std::fs::read(key.private_key.with_extension("pub")).unwrap();
    let added = admin.ssh_with_input(
        "paz@127.0.0.1",
        ssh_port,
        &["ssh-keys:add", name, "--apps", app],
        &public,
    );
    assert!(added.status.success(), "{}", said(&added));
    key
}

/// What a test's `paz up` needs: an admin key, a data dir, and the
/// cleanup of what its agent runs.
struct Host {
    admin: SshIdentity,
    data: tempfile::TempDir,
    cleanup: DockerCleanup,
    /// The admin's public key file.
    key: std::path::PathBuf,
}

async fn host(name: &str) -> Host {
    let docker = tests::docker().await;
    tests::busybox_image(&docker).await;
    let admin = SshIdentity::new("ed25519");
    let data = tests::temp_dir();
    let mut cleanup = DockerCleanup::new(name);
    let machine = agent::machine_id(data.path()).unwrap();
    cleanup.track_label(&format!("paz.machine={machine}"));
    let key = admin.private_key.with_extension("pub");
    Host {
        admin,
        data,
        cleanup,
        key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_certificates_are_ordered_by_one_edge_answered_by_another_and_renewed_under_load() {
    let Host {
        admin,
        data,
        mut cleanup,
        key,
    } = host("https-acme").await;
    let http_port = port_on_both();
    // Certificates live 40 s: renewed at about 27 s, within the test.
    let pebble = Pebble::start(http_port, "127.0.0.2", Duration::from_secs(40));
    // Edge A: paz up, the one edge that orders (it alone has --acme-email).
    let running = start_role(
        "up",
        &[
            "--data-dir",
            data.path().to_str().unwrap(),
            "--admin-key",
            key.to_str().unwrap(),
            "--domain",
            "paz.test",
            "--http-listen",
            &format!("127.0.0.1:{http_port}"),
            "--https-listen",
            "127.0.0.1:0",
            "--acme-email",
            "ops@paz.test",
            "--acme-directory",
            &pebble.directory,
            "--acme-ca-file",
            pebble.ca_file.to_str().unwrap(),
            "--acme-backoff",
            "20s",
            "--access-log",
            "off",
        ],
        &[],
    );
    let edge_a = running.https_port;
    assert!(
        running.banner.iter().any(|line| line.contains("https")
            && line.contains(&format!("certificates from {}", pebble.directory))),
        "{:?}",
        running.banner
    );
    // Edge B: a proxy on another address, without ACME: the CA's DNS sends
    // every probe here, so B answers the challenges A's orders wrote to etcd.
    let (_edge_b, listening) = spawn_until(
        paz()
            .args(["proxy", "--data-dir", data.path().to_str().unwrap()])
            .args([
                "--http-listen",
                &format!("127.0.0.2:{http_port}"),
                "--https-listen",
                "127.0.0.2:0",
                "--access-log",
                "off",
            ]),
        "proxy serving HTTPS on ",
    );
    let edge_b: u16 = listening.rsplit(':').next().unwrap().parse().unwrap();
    let verb = |args: &[&str]| {
        let output = admin.ssh("paz@127.0.0.1", running.ssh_port, args);
        assert!(output.status.success(), "{args:?}: {}", said(&output));
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    verb(&["apps:create", "demo"]);
    let app = proto_app();
    let ports = (running.ssh_port, running.registry_port);
    let pushed = common::push_dir(&admin, app.path(), ports, "demo", &mut cleanup);
    assert!(pushed.status.success(), "{}", said(&pushed));
    let root = data.path().join("pebble-root.pem");
    std::fs::write(&root, pebble.root_pem()).unwrap();

    // Both edges serve demo.paz.test over HTTP/2 with its own certificate,
    // and the app hears that the request came over HTTPS.
    for (ip, port) in [("127.0.0.1", edge_a), ("127.0.0.2", edge_b)] {
        let seen = tests::eventually_blocking(
            &format!("demo.paz.test over HTTPS on {ip}"),
            Duration::from_secs(90),
            || {
                let seen = https(&root, "demo.paz.test", ip, port, "/cgi-bin/env");
                (seen.ok && seen.body.contains("proto=https")).then_some(seen)
            },
        );
        assert_eq!(seen.version, "2", "HTTP/2 by ALPN: {}", seen.verbose);
        assert!(
            seen.verbose
                .contains("subjectAltName: host \"demo.paz.test\" matched"),
            "{}",
            seen.verbose
        );
        assert!(
            seen.verbose.contains("Pebble Intermediate"),
            "{}",
            seen.verbose
        );
    }
    assert!(
        validations(&pebble, "demo.paz.test") >= 1,
        "the CA validated the name (at 127.0.0.2, edge B)"
    );
    // Plain HTTP is sent to HTTPS with a 308, on either edge.
    let (head, _) = plain("127.0.0.1", http_port, "demo.paz.test", "/cgi-bin/env?x=1");
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains(&format!(
            "location: https://demo.paz.test:{edge_a}/cgi-bin/env?x=1"
        )),
        "{head}"
    );
    let listed = verb(&["certs:list", "--json"]);
    let row = cert_row(&listed, "demo.paz.test").unwrap();
    assert_eq!(row["state"], "valid", "{row}");
    assert_eq!(row["source"], "acme", "{row}");
    assert_eq!(row["app"], "demo", "{row}");
    // A deployer of the app may not renew a certificate just issued: the
    // CA's limits are the cluster's.
    let dev = deployer(&admin, running.ssh_port, "demodev", "demo");
    let early = dev.ssh(
        "paz@127.0.0.1",
        running.ssh_port,
        &["certs:renew", "demo.paz.test"],
    );
    assert!(!early.status.success());
    assert!(
        said(&early).contains("less than an hour ago"),
        "{}",
        said(&early)
    );

    // A name added to the app gets its own certificate.
    verb(&["domains:add", "demo", "www.shop.test"]);
    tests::eventually_blocking("www.shop.test over HTTPS", Duration::from_secs(60), || {
        let seen = https(&root, "www.shop.test", "127.0.0.1", edge_a, "/");
        (seen.ok && seen.body.contains("hello over tls")).then_some(())
    });

    // A name the CA cannot validate (its DNS points where nothing listens)
    // is shown failed with the CA's reason, and asked for again only after
    // the back-off: not in a loop.
    pebble.resolve("bad.shop.test", "127.0.0.9");
    verb(&["domains:add", "demo", "bad.shop.test"]);
    let failed =
        tests::eventually_blocking("bad.shop.test to fail", Duration::from_secs(60), || {
            let row = cert_row(&verb(&["certs:list", "--json"]), "bad.shop.test")?;
            (row["state"] == "failed").then_some(row)
        });
    let reason = failed["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("127.0.0.9") || reason.to_lowercase().contains("connection refused"),
        "the CA's reason: {failed}"
    );
    assert!(failed["retry_at"].is_string(), "{failed}");
    let text = verb(&["certs:list"]);
    assert!(text.contains("failed: "), "{text}");
    assert_eq!(validations(&pebble, "bad.shop.test"), 1, "one order so far");

    // Renewal under load: clients open a new TLS connection to each edge,
    // over and over, while the certificate is replaced; none fails.
    let first_expiry = https(&root, "demo.paz.test", "127.0.0.1", edge_a, "/")
        .expiry()
        .expect("curl shows the expiry");
    let www_row = cert_row(&verb(&["certs:list", "--json"]), "www.shop.test").unwrap();
    verb(&["domains:remove", "demo", "www.shop.test"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for (ip, port) in [("127.0.0.1", edge_a), ("127.0.0.2", edge_b)] {
        let (stop, done, failures, root) =
            (stop.clone(), done.clone(), failures.clone(), root.clone());
        load.push(std::thread::spawn(move || {
            let mut failed = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let seen = https(&root, "demo.paz.test", ip, port, "/");
                done.fetch_add(1, Ordering::Relaxed);
                if !(seen.ok && seen.body.contains("hello over tls")) {
                    failures.fetch_add(1, Ordering::Relaxed);
                    failed.push(seen.verbose);
                }
            }
            failed
        }));
    }
    for (ip, port) in [("127.0.0.1", edge_a), ("127.0.0.2", edge_b)] {
        tests::eventually_blocking(
            &format!("a renewed certificate on {ip}"),
            Duration::from_secs(60),
            || {
                let expiry = https(&root, "demo.paz.test", ip, port, "/").expiry()?;
                (expiry != first_expiry).then_some(())
            },
        );
    }
    // The refused name was asked for once more, after its back-off.
    tests::eventually_blocking(
        "bad.shop.test asked for again",
        Duration::from_secs(60),
        || (validations(&pebble, "bad.shop.test") >= 2).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let failed: Vec<String> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(done.load(Ordering::Relaxed) > 10, "the load ran");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no failed request while the certificate was renewed: {:?}",
        &failed[..failed.len().min(2)]
    );
    assert!(
        validations(&pebble, "bad.shop.test") <= 3,
        "backed off, not a loop"
    );
    // The removed name was not renewed: past the time it would have been
    // (two thirds into its 40 s), its certificate is the one it had.
    let expires = humantime::parse_rfc3339(www_row["expires"].as_str().unwrap()).unwrap();
    let renewal_due = expires - Duration::from_secs(40 / 3);
    if let Ok(wait) = renewal_due.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(wait + Duration::from_secs(3));
    }
    let listed = verb(&["certs:list", "--json"]);
    let www_now = cert_row(&listed, "www.shop.test").unwrap();
    assert_eq!(www_now["expires"], www_row["expires"], "{www_now}");
    assert!(www_now["app"].is_null(), "{www_now}");
    assert!(verb(&["certs:list"]).contains("(not routed: not renewed)"));
}

/// A self-signed certificate for `names`, valid from `from` to `until`
/// (seconds from now), and its key, as PEM.
fn self_made(names: &[&str], from: i64, until: i64) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let now = std::time::SystemTime::now();
    let at = |offset: i64| {
        let time = if offset >= 0 {
            now + Duration::from_secs(offset as u64)
        } else {
            now - Duration::from_secs((-offset) as u64)
        };
        rcgen::date_time_ymd(1970, 1, 1) + time.duration_since(std::time::UNIX_EPOCH).unwrap()
    };
    params.not_before = at(from);
    params.not_after = at(until);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_by_hand_redirects_hsts_and_bad_tls_input() {
    let Host {
        admin,
        data,
        mut cleanup,
        key,
    } = host("https-manual").await;
    let running = start(
        &[
            "--data-dir",
            data.path().to_str().unwrap(),
            "--admin-key",
            key.to_str().unwrap(),
            "--domain",
            "paz.test",
            "--access-log",
            "off",
            "--publish-endpoints",
        ],
        &[],
    );
    let (http, tls) = (running.http_port, running.https_port);
    let ssh = |who: &SshIdentity, args: &[&str], input: &[u8]| {
        who.ssh_with_input("paz@127.0.0.1", running.ssh_port, args, input)
    };
    let verb = |args: &[&str]| {
        let output = ssh(&admin, args, b"");
        assert!(output.status.success(), "{args:?}: {}", said(&output));
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    verb(&["apps:create", "shop"]);
    verb(&["apps:create", "blog"]);
    let other = deployer(&admin, running.ssh_port, "blogger", "blog");
    let app = proto_app();
    let ports = (running.ssh_port, running.registry_port);
    let pushed = common::push_dir(&admin, app.path(), ports, "shop", &mut cleanup);
    assert!(pushed.status.success(), "{}", said(&pushed));
    verb(&["domains:add", "shop", "shop.example.com"]);
    // No certificate yet: plain HTTP serves, no redirect.
    let (head, body) = plain("127.0.0.1", http, "shop.example.com", "/cgi-bin/env");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("proto=http"), "{body}");

    // Bring one's own certificate.
    let (cert, cert_key) = self_made(&["shop.example.com"], -60, 86_400);
    let bundle = format!("{cert}{cert_key}");
    let ca = data.path().join("shop.pem");
    std::fs::write(&ca, &cert).unwrap();
    let refused = ssh(
        &other,
        &["certs:add", "shop.example.com"],
        bundle.as_bytes(),
    );
    assert!(!refused.status.success(), "a deployer of another app");
    assert!(
        said(&refused).contains("may not use app `shop`"),
        "{}",
        said(&refused)
    );
    let output = ssh(
        &admin,
        &["certs:add", "shop.example.com"],
        bundle.as_bytes(),
    );
    assert!(output.status.success(), "{}", said(&output));
    let seen =
        tests::eventually_blocking("the certificate served", Duration::from_secs(20), || {
            let seen = https(&ca, "shop.example.com", "127.0.0.1", tls, "/cgi-bin/env");
            seen.ok.then_some(seen)
        });
    assert!(seen.body.contains("proto=https"), "{}", seen.body);
    assert_eq!(seen.version, "2");
    let before = verb(&["certs:list", "--json"]);
    let row = cert_row(&before, "shop.example.com").unwrap();
    assert_eq!(row["source"], "manual");
    assert_eq!(row["state"], "valid");
    assert!(!before.contains("PRIVATE KEY"), "keys are never shown");
    let mine = ssh(&other, &["certs:list", "--json"], b"");
    assert!(cert_row(&String::from_utf8_lossy(&mine.stdout), "shop.example.com").is_none());

    // Bad bundles are refused with their reason and change nothing.
    let (_, wrong_key) = self_made(&["shop.example.com"], -60, 86_400);
    let (expired, expired_key) = self_made(&["shop.example.com"], -86_400, -60);
    for (bundle, reason) in [
        (
            format!("{cert}{wrong_key}"),
            "does not match the certificate",
        ),
        (format!("{expired}{expired_key}"), "expired"),
        ("not a certificate at all".to_string(), "not PEM"),
        (cert.clone(), "no private key"),
    ] {
        let output = ssh(
            &admin,
            &["certs:add", "shop.example.com"],
            bundle.as_bytes(),
        );
        assert!(!output.status.success(), "{reason}");
        assert!(
            said(&output).contains(reason),
            "{reason}: {}",
            said(&output)
        );
    }
    assert_eq!(verb(&["certs:list", "--json"]), before, "nothing changed");
    assert!(https(&ca, "shop.example.com", "127.0.0.1", tls, "/").ok);

    // With a certificate, plain HTTP redirects (on by default), until told not to.
    let (head, _) = plain("127.0.0.1", http, "shop.example.com", "/a?b=c");
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    assert!(
        head.contains(&format!("https://shop.example.com:{tls}/a?b=c")),
        "{head}"
    );
    // ACME's challenge path is answered on plain HTTP first (none pending: 404).
    let (head, _) = plain(
        "127.0.0.1",
        http,
        "shop.example.com",
        "/.well-known/acme-challenge/abc",
    );
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let denied = ssh(&other, &["https:redirect", "shop", "off"], b"");
    assert!(!denied.status.success());
    let denied = ssh(&other, &["certs:renew", "shop.example.com"], b"");
    assert!(!denied.status.success());
    let denied = ssh(&other, &["certs:remove", "shop.example.com"], b"");
    assert!(!denied.status.success(), "{}", said(&denied));
    verb(&["https:redirect", "shop", "off"]);
    tests::eventually_blocking("no redirect", Duration::from_secs(10), || {
        let (head, _) = plain("127.0.0.1", http, "shop.example.com", "/");
        head.starts_with("HTTP/1.1 200").then_some(())
    });
    // HSTS: off by default, then sent over HTTPS only.
    let hsts = |seen: &Seen| {
        seen.verbose
            .to_lowercase()
            .contains("strict-transport-security")
    };
    assert!(!hsts(&https(
        &ca,
        "shop.example.com",
        "127.0.0.1",
        tls,
        "/"
    )));
    verb(&["https:hsts", "shop", "on"]);
    tests::eventually_blocking("HSTS", Duration::from_secs(10), || {
        hsts(&https(&ca, "shop.example.com", "127.0.0.1", tls, "/")).then_some(())
    });
    let (head, _) = plain("127.0.0.1", http, "shop.example.com", "/");
    assert!(
        !head.to_lowercase().contains("strict-transport-security"),
        "{head}"
    );
    let bad = ssh(&admin, &["https:hsts", "shop", "maybe"], b"");
    assert!(!bad.status.success());
    assert!(
        said(&bad).contains("usage: https:hsts APP on|off"),
        "{}",
        said(&bad)
    );

    // Bad TLS input: each is closed, and the proxy keeps serving others.
    // An unknown name: a handshake failure, not another name's certificate.
    let unknown = https(&ca, "nope.example.com", "127.0.0.1", tls, "/");
    assert!(!unknown.ok);
    assert!(
        !unknown.verbose.contains("shop.example.com"),
        "{}",
        unknown.verbose
    );
    // Plain HTTP to the TLS port: closed.
    let (head, body) = plain("127.0.0.1", tls, "shop.example.com", "/");
    assert!(
        !head.contains("HTTP/1.1 200") && !body.contains("hello"),
        "{head}"
    );
    // A handshake that never finishes: closed after the header timeout,
    // while another client is served meanwhile.
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", tls)).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert!(https(&ca, "shop.example.com", "127.0.0.1", tls, "/").ok);
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    let read = stalled.read(&mut byte);
    assert!(
        matches!(read, Ok(0)) || read.is_err() && started.elapsed() < Duration::from_secs(29),
        "the stalled handshake is closed: {read:?}"
    );
    assert!(https(&ca, "shop.example.com", "127.0.0.1", tls, "/").ok);

    // The same over the REST API: list, and a wildcard brought by an admin.
    let token: serde_json::Value = serde_json::from_str(&verb(&[
        "tokens:create",
        "ops",
        "--role",
        "admin",
        "--json",
    ]))
    .unwrap();
    let secret = token["secret"].as_str().unwrap();
    let api = format!("http://127.0.0.1:{}/api/v1", running.api_port);
    let curl = |args: &[&str]| {
        let output = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {secret}"))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.to_string(), body.to_string())
    };
    let (wild, wild_key) = self_made(&["*.example.com"], -60, 86_400);
    let body = serde_json::json!({"chain_pem": wild, "key_pem": wild_key}).to_string();
    let (status, answer) = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &format!("{api}/certs/*.example.com"),
    ]);
    assert_eq!(status, "200", "{answer}");
    let (status, listed) = curl(&[&format!("{api}/certs")]);
    assert_eq!(status, "200", "{listed}");
    assert!(cert_row(&listed, "*.example.com").is_some(), "{listed}");
    let (status, settings) = curl(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"hsts": false}"#,
        &format!("{api}/apps/shop/https"),
    ]);
    assert_eq!(status, "200", "{settings}");
    assert!(settings.contains("\"redirect\":false"), "{settings}");
    let (status, _) = curl(&["-X", "DELETE", &format!("{api}/certs/shop.example.com")]);
    assert_eq!(status, "204");
    // With its own gone, the name is served by the wildcard.
    let wild_ca = data.path().join("wild.pem");
    std::fs::write(&wild_ca, &wild).unwrap();
    tests::eventually_blocking("the wildcard served", Duration::from_secs(20), || {
        https(&wild_ca, "shop.example.com", "127.0.0.1", tls, "/")
            .ok
            .then_some(())
    });
    // Paz's own endpoints behind the same proxy and certificates: the web
    // UI and API at paz.<domain>, the registry at registry.<domain>.
    let (own, own_key) = self_made(&["paz.paz.test", "registry.paz.test"], -60, 86_400);
    let own_ca = data.path().join("own.pem");
    std::fs::write(&own_ca, &own).unwrap();
    for name in ["paz.paz.test", "registry.paz.test"] {
        let output = ssh(
            &admin,
            &["certs:add", name],
            format!("{own}{own_key}").as_bytes(),
        );
        assert!(output.status.success(), "{}", said(&output));
    }
    let ui = tests::eventually_blocking("the web UI over HTTPS", Duration::from_secs(20), || {
        let seen = https(&own_ca, "paz.paz.test", "127.0.0.1", tls, "/login");
        (seen.ok && seen.body.contains("Paz token")).then_some(seen)
    });
    assert_eq!(ui.version, "2");
    let (status, _) = curl(&[
        "--cacert",
        own_ca.to_str().unwrap(),
        "--resolve",
        &format!("paz.paz.test:{tls}:127.0.0.1"),
        &format!("https://paz.paz.test:{tls}/api/v1/certs"),
    ]);
    assert_eq!(status, "200", "the API through the proxy");
    let registry = https(&own_ca, "registry.paz.test", "127.0.0.1", tls, "/v2/");
    assert!(registry.ok, "{}", registry.verbose);
    assert!(
        registry
            .verbose
            .to_lowercase()
            .contains("docker-distribution-api-version"),
        "the registry answers: {}",
        registry.verbose
    );
    // Plain HTTP to them is sent to HTTPS, as for an app.
    let (head, _) = plain("127.0.0.1", http, "paz.paz.test", "/login");
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    // An app named `paz` gives its deployer no say over Paz's own name.
    verb(&["apps:create", "paz"]);
    let pazdev = deployer(&admin, running.ssh_port, "pazdev", "paz");
    let taken = ssh(
        &pazdev,
        &["certs:add", "paz.paz.test"],
        format!("{own}{own_key}").as_bytes(),
    );
    assert!(!taken.status.success());
    assert!(
        said(&taken).contains("Paz's own paz.paz.test"),
        "{}",
        said(&taken)
    );
    let seen = ssh(&pazdev, &["certs:list", "--json"], b"");
    assert!(cert_row(&String::from_utf8_lossy(&seen.stdout), "paz.paz.test").is_none());
    assert!(https(&own_ca, "paz.paz.test", "127.0.0.1", tls, "/login")
        .body
        .contains("Paz token"));

    // A certificate brought by hand goes with its name's route.
    verb(&["domains:add", "shop", "extra.example.net"]);
    let (extra, extra_key) = self_made(&["extra.example.net"], -60, 86_400);
    let output = ssh(
        &admin,
        &["certs:add", "extra.example.net"],
        format!("{extra}{extra_key}").as_bytes(),
    );
    assert!(output.status.success(), "{}", said(&output));
    let removed = verb(&["domains:remove", "shop", "extra.example.net"]);
    assert!(
        removed.contains("its certificate brought by hand"),
        "{removed}"
    );
    assert!(cert_row(&verb(&["certs:list", "--json"]), "extra.example.net").is_none());

    let renew = ssh(&admin, &["certs:renew", "*.example.com"], b"");
    assert!(!renew.status.success());
    assert!(
        said(&renew).contains("brought with certs:add"),
        "{}",
        said(&renew)
    );
}
