//! The `ExecStart` subset the agent runs itself: `/usr/bin/docker run` with the
//! flags Paz renders becomes a [`ContainerSpec`]; `/usr/bin/paz sidekick`
//! becomes a [`SidekickSpec`].

/// A published port: `[ip:][host:]container`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub ip: Option<String>,
    /// `None`: Docker chooses.
    pub host: Option<u16>,
    pub container: u16,
}

/// A container to run, as `docker run` flags say it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub remove: bool,
    pub ports: Vec<Port>,
    pub env: Vec<(String, String)>,
    pub env_files: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub volumes: Vec<String>,
    /// `--memory`, as docker takes it (`256m`).
    pub memory: Option<String>,
    /// `--memory-swap`: memory plus swap (Paz renders it equal to
    /// `memory`: no swap beyond the limit).
    pub memory_swap: Option<String>,
    /// `--cpus` (`0.5`).
    pub cpus: Option<String>,
    /// `--restart` (`no`, `on-failure[:N]`, `always`, `unless-stopped`):
    /// `no` is a one-off, never started again once it exits.
    pub restart: Option<String>,
    /// `-i`: stdin kept open for an attached caller (a one-off of `run`,
    /// which its agent starts only once the caller is attached).
    pub interactive: bool,
    /// `-t`: a TTY.
    pub tty: bool,
    pub command: Vec<String>,
}

/// A sidekick: check an instance, announce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidekickSpec {
    /// The unit it watches.
    pub unit: String,
    /// The key it announces under (`/paz/services/<app>/<release>/<i>`).
    pub key: String,
    /// The HTTP path it checks.
    pub check: String,
    /// Seconds one check may take.
    pub timeout: u64,
    /// Failures in a row before it withdraws.
    pub attempts: u32,
}

/// What a unit's `ExecStart` runs.
// One per parsed unit, never in a hot loop: a box would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exec {
    Container(ContainerSpec),
    Sidekick(SidekickSpec),
}

fn port(text: &str) -> Result<Port, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let number = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("`{text}` is not a port: use [ip:][host:]container"))
    };
    let container = number(parts.last().unwrap_or(&""))?;
    match parts.as_slice() {
        [_] => Ok(Port {
            ip: None,
            host: None,
            container,
        }),
        [host, _] => Ok(Port {
            ip: None,
            host: Some(number(host)?),
            container,
        }),
        [ip, host, _] => Ok(Port {
            ip: Some(ip.to_string()),
            host: if host.is_empty() {
                None
            } else {
                Some(number(host)?)
            },
            container,
        }),
        _ => Err(format!("`{text}` is not a port: use [ip:][host:]container")),
    }
}

fn pair(text: &str, flag: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("{flag} `{text}` is not KEY=VALUE"))
}

/// The one check of an image reference, for every entry point that takes one
/// (verbs, hooks, the image follower) and for unit files: `REPO[:TAG]` or
/// `REPO@sha256:DIGEST` in the characters references use, so that it can
/// never become a `docker run` flag (`--volume=...`) or carry a control
/// character into a unit file.
pub fn check_image(image: &str) -> Result<(), String> {
    let valid = !image.is_empty()
        && image.len() <= 512
        && !image.starts_with('-')
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "./:@_-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an image reference: use REPO[:TAG] or REPO@sha256:DIGEST",
            image.escape_debug()
        ))
    }
}

/// A memory size as Docker's `--memory` takes it (`256m`, `1g`, `512k`,
/// bytes), in bytes.
pub fn memory_bytes(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "memory `{}` is not a size such as 512m",
            text.escape_debug()
        )
    };
    let lower = text.to_ascii_lowercase();
    let (number, unit) = lower.split_at(
        lower
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(lower.len()),
    );
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.strip_suffix('b').unwrap_or(unit) {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(bad()),
    };
    number
        .checked_mul(factor)
        .filter(|&bytes| bytes <= i64::MAX as u64)
        .ok_or_else(|| format!("memory `{text}` is too large"))
}

/// `bytes` as `--memory` says it: in the largest unit that divides it (`512m`).
pub fn render_memory(bytes: u64) -> String {
    for (unit, size) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
        if bytes > 0 && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// A CPU count as Docker's `--cpus` takes it (`1`, `0.5`, `2.25`), in
/// billionths of a CPU (the engine's `NanoCpus`).
pub fn nano_cpus(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "cpus `{}` is not a number of CPUs such as 1 or 0.5",
            text.escape_debug()
        )
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !digits(whole)
        || !digits(fraction)
        || whole.len() > 6
        || fraction.len() > 9
    {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let fraction: u64 = format!("{fraction:0<9}").parse().map_err(|_| bad())?;
    let nano = whole * 1_000_000_000 + fraction;
    if nano == 0 {
        return Err(format!("cpus `{text}` must be more than 0"));
    }
    Ok(nano)
}

/// Billionths of a CPU as `--cpus` says them (`0.5`).
pub fn render_cpus(nano: u64) -> String {
    let (whole, fraction) = (nano / 1_000_000_000, nano % 1_000_000_000);
    if fraction == 0 {
        whole.to_string()
    } else {
        let fraction = format!("{fraction:09}");
        format!("{whole}.{}", fraction.trim_end_matches('0'))
    }
}

/// Parses `docker run` arguments (after `run`).
pub fn parse_docker_run(args: &[String]) -> Result<ContainerSpec, String> {
    let mut spec = ContainerSpec::default();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if !word.starts_with('-') {
            spec.image = word.clone();
            spec.command = words.cloned().collect();
            break;
        }
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (word.as_str(), None),
        };
        let switched = match flag {
            "--rm" => Some(vec![&mut spec.remove]),
            "-i" | "--interactive" => Some(vec![&mut spec.interactive]),
            "-t" | "--tty" => Some(vec![&mut spec.tty]),
            "-it" | "-ti" => Some(vec![&mut spec.interactive, &mut spec.tty]),
            _ => None,
        };
        if let Some(switches) = switched {
            for switch in switches {
                *switch = true;
            }
            continue;
        }
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(value) => Ok(value.clone()),
                None => words
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("docker run flag {flag} needs a value")),
            }
        };
        match flag {
            "--name" => spec.name = value()?,
            "-p" | "--publish" => spec.ports.push(port(&value()?)?),
            "-e" | "--env" => spec.env.push(pair(&value()?, flag)?),
            "--env-file" => spec.env_files.push(value()?),
            "-l" | "--label" => spec.labels.push(pair(&value()?, flag)?),
            "-v" | "--volume" => spec.volumes.push(value()?),
            "-m" | "--memory" => spec.memory = Some(value()?),
            "--memory-swap" => spec.memory_swap = Some(value()?),
            "--cpus" => spec.cpus = Some(value()?),
            "--restart" => spec.restart = Some(value()?),
            other => {
                return Err(format!(
                    "docker run flag {other} is not supported: use --name, -p, -e, --env-file, -l, -v, -m, --memory-swap, --cpus, --restart, --rm, -i, -t"
                ))
            }
        }
    }
    if spec.image.is_empty() {
        return Err("docker run names no image".to_string());
    }
    check_image(&spec.image)?;
    if spec.name.is_empty() {
        return Err("docker run needs --name (the unit's container name)".to_string());
    }
    Ok(spec)
}

/// The `docker run` words for `spec` (without `/usr/bin/docker run`).
pub fn render_docker_run(spec: &ContainerSpec) -> Vec<String> {
    let mut words = Vec::new();
    for (set, flag) in [
        (spec.remove, "--rm"),
        (spec.interactive, "-i"),
        (spec.tty, "-t"),
    ] {
        if set {
            words.push(flag.to_string());
        }
    }
    words.extend(["--name".to_string(), spec.name.clone()]);
    for port in &spec.ports {
        let text = match (&port.ip, port.host) {
            (Some(ip), host) => format!(
                "{ip}:{}:{}",
                host.map(|h| h.to_string()).unwrap_or_default(),
                port.container
            ),
            (None, Some(host)) => format!("{host}:{}", port.container),
            (None, None) => port.container.to_string(),
        };
        words.extend(["-p".to_string(), text]);
    }
    for (key, value) in &spec.env {
        words.extend(["-e".to_string(), format!("{key}={value}")]);
    }
    for file in &spec.env_files {
        words.extend(["--env-file".to_string(), file.clone()]);
    }
    for (key, value) in &spec.labels {
        words.extend(["-l".to_string(), format!("{key}={value}")]);
    }
    for volume in &spec.volumes {
        words.extend(["-v".to_string(), volume.clone()]);
    }
    for (flag, value) in [
        ("-m", &spec.memory),
        ("--memory-swap", &spec.memory_swap),
        ("--cpus", &spec.cpus),
        ("--restart", &spec.restart),
    ] {
        if let Some(value) = value {
            words.extend([flag.to_string(), value.clone()]);
        }
    }
    words.push(spec.image.clone());
    words.extend(spec.command.iter().cloned());
    words
}

/// Parses `paz sidekick` arguments (after `sidekick`).
pub fn parse_sidekick(args: &[String]) -> Result<SidekickSpec, String> {
    let mut unit = None;
    let mut key = None;
    let mut check = "/".to_string();
    let mut timeout = 5;
    let mut attempts = 3;
    let mut words = args.iter();
    while let Some(flag) = words.next() {
        let mut value = || {
            words
                .next()
                .cloned()
                .ok_or_else(|| format!("paz sidekick {flag} needs a value"))
        };
        match flag.as_str() {
            "--unit" => unit = Some(value()?),
            "--key" => key = Some(value()?),
            "--check" => check = value()?,
            "--timeout" => timeout = value()?.parse().map_err(|_| "paz sidekick --timeout takes whole seconds".to_string())?,
            "--attempts" => attempts = value()?.parse().map_err(|_| "paz sidekick --attempts takes a number".to_string())?,
            other => return Err(format!("paz sidekick flag {other} is not supported: use --unit, --key, --check, --timeout, --attempts")),
        }
    }
    Ok(SidekickSpec {
        unit: unit.ok_or("paz sidekick needs --unit")?,
        key: key.ok_or("paz sidekick needs --key")?,
        check,
        timeout,
        attempts,
    })
}

/// The `paz sidekick` words for `spec`.
pub fn render_sidekick(spec: &SidekickSpec) -> Vec<String> {
    [
        "--unit",
        &spec.unit,
        "--key",
        &spec.key,
        "--check",
        &spec.check,
        "--timeout",
        &spec.timeout.to_string(),
        "--attempts",
        &spec.attempts.to_string(),
    ]
    .iter()
    .map(|word| word.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn word() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ._:/=%\"'-]{1,12}"
    }

    fn spec() -> impl Strategy<Value = ContainerSpec> {
        (
            "[a-z][a-z0-9-]{0,20}",
            "[a-z0-9][a-z0-9./:-]{0,29}",
            any::<bool>(),
            proptest::collection::vec(
                (
                    proptest::option::of(Just("127.0.0.1".to_string())),
                    proptest::option::of(1u16..),
                    1u16..,
                ),
                0..3,
            ),
            proptest::collection::vec(("[A-Z_][A-Z0-9_]{0,8}", word()), 0..4),
            proptest::collection::vec(("[a-z.]{1,10}", word()), 0..3),
            proptest::option::of("[0-9]{1,4}m"),
            proptest::collection::vec(word(), 0..4),
        )
            .prop_map(
                |(name, image, remove, ports, env, labels, memory, command)| ContainerSpec {
                    name,
                    image,
                    remove,
                    ports: ports
                        .into_iter()
                        .map(|(ip, host, container)| Port {
                            ip,
                            host,
                            container,
                        })
                        .collect(),
                    env,
                    labels,
                    memory,
                    command,
                    ..ContainerSpec::default()
                },
            )
    }

    #[test]
    fn memory_sizes_read_as_docker_reads_them() {
        assert_eq!(memory_bytes("512"), Ok(512));
        assert_eq!(memory_bytes("64k"), Ok(64 << 10));
        assert_eq!(memory_bytes("256M"), Ok(256 << 20));
        assert_eq!(memory_bytes("2gb"), Ok(2 << 30));
        assert_eq!(
            memory_bytes("lots"),
            Err("memory `lots` is not a size such as 512m".to_string())
        );
        for bad in ["m", "1t", "", "-1m", "1.5g", "99999999999999g"] {
            assert!(memory_bytes(bad).is_err(), "{bad}");
        }
        for bytes in [
            512u64,
            64 << 10,
            256 << 20,
            2 << 30,
            (1 << 30) + (1 << 20),
            1000,
        ] {
            assert_eq!(memory_bytes(&render_memory(bytes)), Ok(bytes));
        }
        assert_eq!(render_memory(512 << 20), "512m");
    }

    #[test]
    fn cpus_read_as_docker_reads_them() {
        assert_eq!(nano_cpus("1"), Ok(1_000_000_000));
        assert_eq!(nano_cpus("0.5"), Ok(500_000_000));
        assert_eq!(nano_cpus(".25"), Ok(250_000_000));
        assert_eq!(nano_cpus("2.000000001"), Ok(2_000_000_001));
        for bad in [
            "",
            ".",
            "0",
            "0.0",
            "-1",
            "1e3",
            "one",
            "1.0000000001",
            "1,5",
        ] {
            assert!(nano_cpus(bad).is_err(), "{bad}");
        }
        for text in ["1", "0.5", "2.25", "0.001"] {
            assert_eq!(render_cpus(nano_cpus(text).unwrap()), text);
        }
    }

    proptest! {
        #[test]
        fn a_rendered_spec_parses_back_to_itself(spec in spec()) {
            let line = crate::exec::join(&render_docker_run(&spec));
            let expanded = crate::exec::expand(&line, &crate::exec::Specifiers::default(), 1).unwrap();
            let words = crate::exec::split(&expanded).unwrap();
            prop_assert_eq!(parse_docker_run(&words).unwrap(), spec);
        }
    }
}
