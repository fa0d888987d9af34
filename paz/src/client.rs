//! The `paz` client: `paz VERB ARGS` runs a verb over the REST API with the
//! names, arguments and output of `ssh paz@HOST VERB ARGS`; `paz login URL`
//! keeps the API's URL and a token in `~/.config/paz/credentials`.
//!
//! A verb's APP may be given as `-a APP`, or left out in a git checkout
//! whose `paz` remote names the app: the client puts it first, unless the
//! first argument is already an app name and the verb's other required
//! arguments are there too (`paz releases` in a checkout of `shop` is
//! `releases shop`; `paz releases other` stays as it is if `other` is an
//! app; `paz rollback v3` is `rollback shop v3` unless an app is named v3).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Where the API is and who calls it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Credentials {
    pub(crate) url: String,
    pub(crate) token: String,
}

/// `~/.config/paz/credentials` (or under `$XDG_CONFIG_HOME`).
fn credentials_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("paz").join("credentials"))
}

/// The API's URL and token: `PAZ_API_URL` and `PAZ_API_TOKEN` over the
/// credentials file.
fn credentials() -> anyhow::Result<Credentials> {
    let saved = match credentials_path() {
        Ok(path) if path.exists() => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(serde_json::from_str::<Credentials>(&text).with_context(|| {
                format!(
                    "{} is not what paz login writes: run paz login URL again",
                    path.display()
                )
            })?)
        }
        _ => None,
    };
    let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let url = env("PAZ_API_URL").or_else(|| saved.as_ref().map(|s| s.url.clone()));
    let token = env("PAZ_API_TOKEN").or_else(|| saved.as_ref().map(|s| s.token.clone()));
    match (url, token) {
        (Some(url), Some(token)) => Ok(Credentials { url, token }),
        _ => bail!("not logged in: run paz login URL (e.g. http://127.0.0.1:9000) with a token from tokens:create, or set PAZ_API_URL and PAZ_API_TOKEN"),
    }
}

/// `paz login URL`: reads a token (from the terminal, or stdin), checks it
/// against the API, and keeps both (mode 0600).
pub(crate) async fn login(url: &str) -> anyhow::Result<()> {
    let url = url.trim_end_matches('/').to_string();
    if !url.starts_with("http://") && !url.starts_with("https://") {
        bail!("`{url}` is not the API's URL: give one such as http://127.0.0.1:9000");
    }
    let stdin = std::io::stdin();
    let token = if stdin.is_terminal() {
        // Not echoed: a token is a password.
        rpassword::prompt_password("token (tokens:create prints it): ")
            .context("cannot read the token from the terminal")?
    } else {
        let mut text = String::new();
        stdin.lock().read_to_string(&mut text)?;
        text
    };
    let credentials = Credentials {
        url,
        token: token.trim().to_string(),
    };
    if credentials.token.is_empty() {
        bail!("no token given: paste the secret tokens:create printed");
    }
    // The token must work before it is kept.
    call(&credentials, "apps:list", &[], "").await?;
    let path = credentials_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    }
    support::write_private_file(&path, serde_json::to_string(&credentials)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "logged in to {}; credentials in {}",
        credentials.url,
        path.display()
    );
    Ok(())
}

/// What the API answered a verb: its text and JSON, or its one line of error.
async fn call(
    credentials: &Credentials,
    verb: &str,
    args: &[String],
    stdin: &str,
) -> anyhow::Result<Value> {
    let url = format!("{}/api/v1/verbs/{verb}", credentials.url);
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&credentials.token)
        .json(&json!({"args": args, "stdin": stdin}))
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach the API at {}: is paz up running, and is the URL right?",
                credentials.url
            )
        })?;
    let ok = response.status().is_success();
    let answer: Value = response
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON: is that Paz's API?"))?;
    if !ok {
        bail!(
            "{}",
            answer["message"]
                .as_str()
                .unwrap_or("the API refused the call")
        );
    }
    Ok(answer)
}

/// The app the `paz` remote of the git checkout here names, if any.
fn app_of_checkout() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["remote", "get-url", "paz"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let url = String::from_utf8(output.stdout).ok()?;
    let last = url.trim().rsplit(['/', ':']).next()?;
    let app = last.trim_end_matches(".git");
    store::AppName::new(app).ok().map(|app| app.to_string())
}

/// Whether the app of the checkout goes first in `args` of a verb whose
/// `usage` has APP first: unless `args` already begin with an app name and
/// have every required argument.
fn needs_app(usage: &str, args: &[String]) -> bool {
    let required = usage
        .split_whitespace()
        .skip(1)
        // `[optional words]` and the `...` of a repeated one are not required.
        .filter(|word| !word.starts_with('[') && !word.ends_with(']') && *word != "...")
        .count();
    let named = args
        .first()
        .is_some_and(|first| store::AppName::new(first).is_ok());
    !named || args.len() < required
}

/// Whether `name` is an app the caller can see.
async fn is_an_app(credentials: &Credentials, name: &str) -> anyhow::Result<bool> {
    let listed = call(credentials, "apps:list", &[], "").await?;
    Ok(listed["json"]
        .as_array()
        .is_some_and(|apps| apps.iter().any(|app| app == name)))
}

/// `paz VERB ARGS`: `-a APP`, `--json` and (for `builds:log`) `-f` are the
/// client's, the rest the verb's.
pub(crate) async fn run(words: Vec<String>) -> anyhow::Result<()> {
    let mut words = words.into_iter();
    let verb = words
        .next()
        .context("no verb given: run paz verbs to list them")?;
    let (mut args, mut app, mut as_json, mut follow) = (Vec::new(), None, false, false);
    // A one-off's command is its own from its first word on, flags and all.
    let one_off = matches!(verb.as_str(), "run" | "run:detached");
    while let Some(word) = words.next() {
        if one_off && !args.is_empty() {
            args.push(word);
            continue;
        }
        match word.as_str() {
            "-a" | "--app" => app = Some(words.next().context("-a takes an app name")?),
            "--json" => as_json = true,
            "-f" | "--follow" if verb == "builds:log" => follow = true,
            _ => args.push(word),
        }
    }
    let credentials = credentials()?;
    let spec = verbs::find(&verb);
    let usage = spec.map_or("", |spec| spec.usage);
    let takes_app = usage.split_whitespace().nth(1) == Some("APP");
    if takes_app {
        match app {
            Some(app) => args.insert(0, app),
            None => {
                if let Some(app) = app_of_checkout() {
                    // `rollback v3`: v3 could be an app; it is one if it is listed.
                    if needs_app(usage, &args) || !is_an_app(&credentials, &args[0]).await? {
                        args.insert(0, app);
                    }
                }
            }
        }
    } else if let Some(app) = app {
        bail!("{verb} takes no app (its usage: {usage}): leave -a {app} out");
    }
    if follow {
        return crate::progress::follow_build(&credentials, &args).await;
    }
    if verb == "run" {
        let code = crate::one_off::run(&credentials, &args).await?;
        // The terminal is restored (the run's guard is dropped) by now.
        std::process::exit(code);
    }
    if verb == "logs" && !as_json {
        return crate::progress::logs(&credentials, &args).await;
    }
    if !as_json {
        if let Some(start) = crate::progress::rollout_of(&verb, &args) {
            return crate::progress::follow_rollout(&credentials, start).await;
        }
    }
    let stdin = if spec.is_some_and(|spec| spec.reads_stdin) {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        String::new()
    };
    let answer = call(&credentials, &verb, &args, &stdin).await?;
    let text = if as_json {
        serde_json::to_string_pretty(&answer["json"])?
    } else {
        answer["text"].as_str().unwrap_or_default().to_string()
    };
    if !text.is_empty() {
        println!("{text}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkouts_app_goes_first_unless_one_is_named() {
        // The verbs' own usages.
        let needs = |verb: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            needs_app(verbs::find(verb).unwrap().usage, &args)
        };
        assert!(needs("releases", &[]));
        assert!(!needs("releases", &["other"]));
        assert!(needs("config:set", &["GREETING=hi"]));
        assert!(!needs("config:set", &["other", "GREETING=hi"]));
        assert!(
            needs("config:unset", &["GREETING"]),
            "GREETING is no app name"
        );
        assert!(!needs("config:unset", &["other", "greeting"]));
        assert!(needs("domains:add", &["example.com"]));
        assert!(
            needs("domains:add", &["shop"]),
            "one argument is the domain"
        );
        assert!(needs("rollback", &["3"]));
        assert!(needs("ps:scale", &["web=2"]));
        assert!(needs("deploy", &["busybox"]));
        assert!(!needs("deploy", &["other", "busybox"]));
    }
}
