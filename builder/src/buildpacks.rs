//! Buildpack detection and Dockerfile generation. The buildpacks are data
//! (`buildpacks/*/`), embedded here at compile time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{BuildError, Result};
use serde::Deserialize;

/// One buildpack as its folder declares it.
#[derive(Debug, Clone, Deserialize)]
pub struct Buildpack {
    pub name: String,
    pub order: u32,
    /// Files or folders at the repo root; any one selects this buildpack.
    pub detect: Vec<String>,
    pub base_image: String,
    pub default_command: String,
    #[serde(skip)]
    pub template: &'static str,
}

macro_rules! embedded {
    ($($name:literal),*) => {
        [$((
            include_str!(concat!("../../buildpacks/", $name, "/buildpack.toml")),
            include_str!(concat!("../../buildpacks/", $name, "/Dockerfile")),
        )),*]
    };
}

/// Every buildpack, in the order they are tried.
pub fn all() -> Vec<Buildpack> {
    let mut packs: Vec<Buildpack> = embedded!("static", "node", "python", "go", "rust")
        .into_iter()
        .map(|(declaration, template)| {
            let mut pack: Buildpack =
                toml::from_str(declaration).expect("embedded buildpacks are valid");
            pack.template = template;
            pack
        })
        .collect();
    packs.sort_by_key(|pack| pack.order);
    packs
}

/// What the repo root holds, as far as detection needs to know.
#[derive(Debug, Default, Clone)]
pub struct Root {
    /// Names of the files and folders at the root.
    pub names: BTreeSet<String>,
    /// Contents of the root files detection reads (`Procfile`, `Cargo.toml`).
    pub files: HashMap<String, String>,
}

/// How an app is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `Dockerfile`, or the buildpack's name.
    pub buildpack: String,
    /// The generated Dockerfile; `None` means the repo's own.
    pub dockerfile: Option<String>,
    /// Process types and commands from the Procfile.
    pub processes: BTreeMap<String, String>,
    pub release_command: Option<String>,
    /// Scheduled jobs from `app.json`'s `cron` list.
    pub cron: Vec<store::records::CronJob>,
}

/// The images a Dockerfile builds on: each `FROM` (not an earlier stage)
/// and each `COPY --from=` that names an image, with the `ARG` defaults
/// given before them substituted (`FROM $BASE`).
pub fn base_images(dockerfile: &str) -> Vec<String> {
    let mut args: HashMap<String, String> = HashMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut images = Vec::new();
    let substitute = |word: &str, args: &HashMap<String, String>| {
        let mut word = word.to_string();
        for (name, value) in args {
            word = word
                .replace(&format!("${{{name}}}"), value)
                .replace(&format!("${name}"), value);
        }
        word
    };
    // Continuation lines joined, comments dropped.
    let joined = dockerfile.replace("\\\n", " ");
    for line in joined.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else {
            continue;
        };
        let words: Vec<&str> = words.collect();
        match instruction.to_ascii_uppercase().as_str() {
            "ARG" => {
                for word in &words {
                    if let Some((name, value)) = word.split_once('=') {
                        args.insert(name.to_string(), value.trim_matches('"').to_string());
                    }
                }
            }
            "FROM" => {
                let mut rest = words.iter().filter(|word| !word.starts_with("--"));
                if let Some(image) = rest.next() {
                    let image = substitute(image, &args);
                    if !stages.contains(&image.to_ascii_lowercase()) {
                        images.push(image);
                    }
                }
                if let (Some(as_word), Some(stage)) = (rest.next(), rest.next()) {
                    if as_word.eq_ignore_ascii_case("as") {
                        stages.push(stage.to_ascii_lowercase());
                    }
                }
            }
            "COPY" => {
                for word in &words {
                    if let Some(from) = word.strip_prefix("--from=") {
                        let from = substitute(from, &args);
                        let is_stage = stages.contains(&from.to_ascii_lowercase())
                            || from.chars().all(|c| c.is_ascii_digit());
                        if !is_stage {
                            images.push(from);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    images
}

/// Parses a Procfile (`type: command` lines).
pub fn procfile(text: &str) -> Result<BTreeMap<String, String>> {
    let mut processes = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, command) = line.split_once(':').ok_or_else(|| {
            BuildError::Plan(format!(
                "Procfile line {} is not `type: command`",
                number + 1
            ))
        })?;
        let name = name.trim();
        // A type names units (`<app>-v<n>-<type>-<index>`) and `ps:scale`.
        store::names::check_process_type(name)
            .map_err(|error| BuildError::Plan(format!("Procfile line {}: {error}", number + 1)))?;
        if command.trim().is_empty() {
            return Err(BuildError::Plan(format!(
                "Procfile line {}: process type `{name}` has no command",
                number + 1
            )));
        }
        processes.insert(name.to_string(), command.trim().to_string());
    }
    Ok(processes)
}

/// The `cron` list of an `app.json` (Dokku's format: `{"cron": [{"command":
/// "...", "schedule": "0 3 * * *"}]}`); every error names the field.
pub fn cron_jobs(app_json: &str) -> Result<Vec<store::records::CronJob>> {
    #[derive(serde::Deserialize)]
    struct AppJson {
        #[serde(default)]
        cron: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        command: String,
        schedule: String,
    }
    let parsed: AppJson = serde_json::from_str(app_json)
        .map_err(|error| BuildError::Plan(format!("app.json is not valid: {error}")))?;
    let mut jobs: Vec<store::records::CronJob> = Vec::new();
    for (i, entry) in parsed.cron.into_iter().enumerate() {
        let field = |name: &str| format!("app.json cron[{i}].{name}");
        let command = entry.command.trim();
        if command.is_empty() || command.chars().any(|c| c.is_control() && c != '\t') {
            return Err(BuildError::Plan(format!(
                "{} is empty or holds a control character: give the shell command to run",
                field("command")
            )));
        }
        store::cron::check_schedule(&entry.schedule)
            .map_err(|error| BuildError::Plan(format!("{}: {error}", field("schedule"))))?;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{}\n{command}", entry.schedule).as_bytes());
        let id = format!("c{}", &hex::encode(digest)[..7]);
        if jobs.iter().any(|job| job.id == id) {
            return Err(BuildError::Plan(format!(
                "{} repeats an earlier job's schedule and command",
                field("command")
            )));
        }
        jobs.push(store::records::CronJob {
            id,
            command: command.to_string(),
            schedule: entry.schedule,
        });
    }
    Ok(jobs)
}

/// Chooses how to build `root`; `base_images` overrides buildpacks' base images.
pub fn plan(root: &Root, base_images: &HashMap<String, String>) -> Result<Plan> {
    let mut processes = match root.files.get("Procfile") {
        Some(text) => procfile(text)?,
        None => BTreeMap::new(),
    };
    let release_command = processes.remove("release");
    let cron = match root.files.get("app.json") {
        Some(text) => cron_jobs(text)?,
        None => Vec::new(),
    };
    if root.names.contains("Dockerfile") {
        return Ok(Plan {
            buildpack: "Dockerfile".to_string(),
            dockerfile: None,
            processes,
            release_command,
            cron,
        });
    }
    let packs = all();
    let Some(pack) = packs
        .iter()
        .find(|pack| pack.detect.iter().any(|name| root.names.contains(name)))
    else {
        let looked_for: Vec<String> = std::iter::once("Dockerfile".to_string())
            .chain(
                packs
                    .iter()
                    .map(|pack| format!("{} ({})", pack.detect.join(" or "), pack.name)),
            )
            .collect();
        return Err(BuildError::Plan(format!(
            "nothing to build: no Dockerfile and no buildpack matches; looked for {}",
            looked_for.join(", ")
        )));
    };
    let mut values = HashMap::new();
    values.insert(
        "base_image",
        base_images
            .get(&pack.name)
            .cloned()
            .unwrap_or_else(|| pack.base_image.clone()),
    );
    values.insert(
        "static_root",
        if root.names.contains("public") {
            "public/".to_string()
        } else {
            ".".to_string()
        },
    );
    if pack.name == "rust" {
        values.insert(
            "binary",
            rust_binary(
                root.files
                    .get("Cargo.toml")
                    .map(String::as_str)
                    .unwrap_or(""),
            )?,
        );
    }
    let default_command = fill(&pack.default_command, &values);
    let web = processes.get("web").cloned().unwrap_or(default_command);
    let command =
        serde_json::to_string(&["sh", "-c", &format!("exec {web}")]).expect("strings serialize");
    values.insert("command", command);
    Ok(Plan {
        buildpack: pack.name.clone(),
        dockerfile: Some(fill(pack.template, &values)),
        processes,
        release_command,
        cron,
    })
}

fn fill(template: &str, values: &HashMap<&str, String>) -> String {
    let mut text = template.to_string();
    for (name, value) in values {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    text
}

/// The binary a Cargo package builds (its package name).
fn rust_binary(cargo_toml: &str) -> Result<String> {
    let manifest: toml::Value = toml::from_str(cargo_toml)
        .map_err(|error| BuildError::Plan(format!("Cargo.toml is not valid TOML: {error}")))?;
    let name = manifest
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| {
            BuildError::Plan(
                "Cargo.toml has no [package] name: the rust buildpack builds one package"
                    .to_string(),
            )
        })?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(BuildError::Plan(format!(
            "Cargo.toml package name `{name}` is not a plain binary name"
        )));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod base_image_tests {
    use super::base_images;

    #[test]
    fn the_images_a_dockerfile_builds_on_are_found_also_behind_args_and_stages() {
        let dockerfile = "ARG BASE=127.0.0.1:5000/two:v1\nFROM --platform=linux/amd64 golang:1.22 AS build\nRUN make\nFROM ${BASE}\nCOPY --from=build /app /app\nCOPY --from=127.0.0.1:5000/three /x /x\nCOPY --from=0 /y /y\n";
        assert_eq!(
            base_images(dockerfile),
            [
                "golang:1.22",
                "127.0.0.1:5000/two:v1",
                "127.0.0.1:5000/three"
            ]
        );
    }
}

#[cfg(test)]
mod cron_tests {
    use super::*;

    #[test]
    fn app_json_cron_jobs_are_read_and_bad_ones_name_their_field() {
        let jobs = cron_jobs(
            r#"{"name": "x", "cron": [{"command": "echo tick", "schedule": "* * * * *"}, {"command": "./nightly", "schedule": "0 3 * * *"}]}"#,
        )
        .unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].command, "echo tick");
        assert!(jobs[0].id.starts_with('c') && jobs[0].id.len() == 8);
        assert_ne!(jobs[0].id, jobs[1].id);
        assert_eq!(cron_jobs("{}").unwrap(), Vec::new());
        for (text, says) in [
            (
                r#"{"cron": [{"command": "x", "schedule": "often"}]}"#,
                "app.json cron[0].schedule: `often` is not a cron schedule",
            ),
            (
                r#"{"cron": [{"command": "x", "schedule": "* * * * *"}, {"command": "y", "schedule": "99 * * * *"}]}"#,
                "app.json cron[1].schedule",
            ),
            (
                r#"{"cron": [{"command": " ", "schedule": "* * * * *"}]}"#,
                "app.json cron[0].command is empty",
            ),
            (r#"{"cron": [{"command": "x"}]}"#, "app.json is not valid"),
            (
                r#"{"cron": [{"command": "x", "schedule": "* * * * *", "at": 1}]}"#,
                "app.json is not valid",
            ),
            ("not json", "app.json is not valid"),
        ] {
            let error = cron_jobs(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn root(names: &[&str], files: &[(&str, &str)]) -> Root {
        Root {
            names: names.iter().map(|n| n.to_string()).collect(),
            files: files
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
        }
    }

    fn check(root: Root, expected: Expect) {
        let plan = plan(&root, &HashMap::new()).unwrap();
        expected.assert_eq(&format!(
            "# {}\n{}",
            plan.buildpack,
            plan.dockerfile.unwrap_or_default()
        ));
    }

    #[test]
    fn static_sites_are_served_by_busybox_httpd() {
        check(
            root(&["index.html"], &[]),
            expect![[r#"
            # static
            FROM busybox:1.36
            COPY . /srv/www
            ENV PORT=5000
            EXPOSE 5000
            CMD ["sh","-c","exec httpd -f -p ${PORT:-5000} -h /srv/www"]
        "#]],
        );
        let with_public = plan(
            &root(&["public", "README"], &[]),
            &HashMap::from([("static".to_string(), "paz/busybox:latest".to_string())]),
        )
        .unwrap();
        assert!(with_public
            .dockerfile
            .unwrap()
            .starts_with("FROM paz/busybox:latest\nCOPY public/ /srv/www\n"));
    }

    #[test]
    fn node_apps_install_then_run_the_procfile_web_command() {
        check(
            root(
                &["package.json", "Procfile"],
                &[(
                    "Procfile",
                    "web: node server.js\nworker: node jobs.js\nrelease: node migrate.js\n",
                )],
            ),
            expect![[r#"
            # node
            FROM node:20-bookworm-slim
            WORKDIR /app
            ENV NODE_ENV=production
            COPY package*.json ./
            RUN if [ -f package-lock.json ]; then npm ci --omit=dev; else npm install --omit=dev; fi
            COPY . .
            ENV PORT=5000
            EXPOSE 5000
            CMD ["sh","-c","exec node server.js"]
        "#]],
        );
        let plan = plan(
            &root(
                &["package.json", "Procfile"],
                &[(
                    "Procfile",
                    "web: node server.js\nworker: node jobs.js\nrelease: node migrate.js\n",
                )],
            ),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(plan.release_command.as_deref(), Some("node migrate.js"));
        assert_eq!(plan.processes.keys().collect::<Vec<_>>(), ["web", "worker"]);
    }

    #[test]
    fn python_go_and_rust_apps() {
        check(
            root(&["requirements.txt"], &[]),
            expect![[r#"
            # python
            FROM python:3.12-slim-bookworm
            WORKDIR /app
            ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
            COPY . .
            RUN if [ -f requirements.txt ]; then pip install -r requirements.txt; else pip install .; fi
            ENV PORT=5000
            EXPOSE 5000
            CMD ["sh","-c","exec python app.py"]
        "#]],
        );
        check(
            root(&["go.mod", "main.go"], &[]),
            expect![[r#"
            # go
            FROM golang:1.22-bookworm AS build
            WORKDIR /src
            COPY go.* ./
            RUN go mod download
            COPY . .
            RUN CGO_ENABLED=0 go build -o /app/server .

            FROM debian:bookworm-slim
            COPY --from=build /app/server /app/server
            ENV PORT=5000
            EXPOSE 5000
            CMD ["sh","-c","exec /app/server"]
        "#]],
        );
        check(
            root(
                &["Cargo.toml"],
                &[(
                    "Cargo.toml",
                    "[package]\nname = \"hello-web\"\nversion = \"0.1.0\"\n",
                )],
            ),
            expect![[r#"
            # rust
            FROM rust:1-bookworm AS build
            WORKDIR /src
            COPY . .
            RUN cargo build --release --locked || cargo build --release

            FROM debian:bookworm-slim
            COPY --from=build /src/target/release/hello-web /app/hello-web
            ENV PORT=5000
            EXPOSE 5000
            CMD ["sh","-c","exec /app/hello-web"]
        "#]],
        );
    }

    #[test]
    fn a_dockerfile_wins_and_nothing_to_detect_lists_what_was_looked_for() {
        let plan = plan(&root(&["Dockerfile", "package.json"], &[]), &HashMap::new()).unwrap();
        assert_eq!(
            (plan.buildpack.as_str(), plan.dockerfile),
            ("Dockerfile", None)
        );
        let error = super::plan(&root(&["README.md"], &[]), &HashMap::new())
            .unwrap_err()
            .to_string();
        expect![[r#"nothing to build: no Dockerfile and no buildpack matches; looked for Dockerfile, package.json (node), requirements.txt or pyproject.toml (python), go.mod (go), Cargo.toml (rust), index.html or public (static)"#]].assert_eq(&error);
    }

    #[test]
    fn bad_procfiles_and_cargo_manifests_are_refused() {
        let refused = |text: &str| procfile(text).unwrap_err().to_string();
        assert_eq!(
            refused("web node x"),
            "Procfile line 1 is not `type: command`"
        );
        assert!(refused("we b: x").contains("process type `we b` is invalid"));
        assert!(refused("my-worker: x").contains("use 1 to 32 lowercase letters"));
        assert!(refused("web:   ").contains("has no command"));
        let error = super::plan(
            &root(&["Cargo.toml"], &[("Cargo.toml", "[workspace]\n")]),
            &HashMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("has no [package] name"), "{error}");
    }
}
