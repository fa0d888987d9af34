//! Long work followed over the REST API as it happens: `paz deploy`,
//! `paz rollback` and `paz ps:restart` start a rollout and print each of
//! its steps (SSH's lines) until it ends; `paz builds:log APP [ID] -f`
//! prints a build's log as the builder writes it; `paz logs APP [-f]`
//! prints an app's lines (and, followed, each new one). The exit code says
//! whether the rollout or the build succeeded.

use anyhow::{bail, Context};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::client::Credentials;

/// How a rollout verb is started over the API.
#[derive(Debug, PartialEq)]
pub(crate) struct Start {
    /// Under `/api/v1`.
    pub(crate) path: String,
    pub(crate) body: Value,
}

/// The rollout `verb` with `args` would start, if it is one this module
/// follows and its arguments are whole; `None` leaves it to the verb (which
/// gives the same usage errors as SSH).
pub(crate) fn rollout_of(verb: &str, args: &[String]) -> Option<Start> {
    let app = store::AppName::new(args.first()?).ok()?;
    let releases = format!("/apps/{app}/releases");
    match (verb, &args[1..]) {
        ("deploy", [image]) if !image.starts_with('-') => Some(Start {
            path: releases,
            body: json!({"image": image}),
        }),
        ("rollback", []) => Some(Start {
            path: releases,
            body: json!({"previous": true}),
        }),
        ("rollback", [n]) => {
            let n: u64 = n.trim_start_matches('v').parse().ok()?;
            Some(Start {
                path: releases,
                body: json!({"release": n}),
            })
        }
        ("ps:restart", []) => Some(Start {
            path: format!("/apps/{app}/actions/restart"),
            body: json!({}),
        }),
        _ => None,
    }
}

/// A client whose streams fail when nothing, not even the server's
/// keep-alive (every 15 s), comes for a minute: a connection that died
/// without closing is noticed.
fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .context("cannot make an HTTP client")
}

/// The Server-Sent Events the API answers `request` with, as the caller.
async fn events(
    credentials: &Credentials,
    request: reqwest::RequestBuilder,
) -> anyhow::Result<
    impl futures::Stream<
        Item = Result<
            eventsource_stream::Event,
            eventsource_stream::EventStreamError<reqwest::Error>,
        >,
    >,
> {
    let request = request
        .bearer_auth(&credentials.token)
        .header(reqwest::header::ACCEPT, "text/event-stream");
    Ok(send(request, &credentials.url)
        .await?
        .bytes_stream()
        .eventsource())
}

/// The API's answer to `request`, or its error's one line.
async fn send(request: reqwest::RequestBuilder, url: &str) -> anyhow::Result<reqwest::Response> {
    let response = request.send().await.with_context(|| {
        format!("cannot reach the API at {url}: is paz up running, and is the URL right?")
    })?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or_default();
    bail!(
        "{}",
        answer["message"]
            .as_str()
            .map_or_else(|| format!("the API answered {status}"), str::to_string)
    )
}

/// Starts the rollout and prints its steps until it ends; an error if it failed.
pub(crate) async fn follow_rollout(credentials: &Credentials, start: Start) -> anyhow::Result<()> {
    let http = http()?;
    let url = format!("{}/api/v1{}", credentials.url, start.path);
    let started = send(
        http.post(&url)
            .bearer_auth(&credentials.token)
            .json(&start.body),
        &credentials.url,
    )
    .await?;
    let location = started
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .context("the API started a rollout but did not say where it is")?
        .to_string();
    let events = format!("{}{location}/events", credentials.url);
    let mut last: Option<String> = None;
    // A stream that breaks is picked up where it was (Last-Event-ID); five
    // breaks in a row without a step between them end the wait.
    let mut breaks = 0;
    while breaks < 5 {
        breaks += 1;
        let mut request = http.get(&events);
        if let Some(last) = &last {
            request = request.header("last-event-id", last);
        }
        let mut stream = std::pin::pin!(self::events(credentials, request).await?);
        while let Some(Ok(event)) = stream.next().await {
            let data: Value = serde_json::from_str(&event.data).unwrap_or_default();
            match event.event.as_str() {
                "step" => {
                    println!("{}", data["text"].as_str().unwrap_or_default());
                    last = Some(event.id);
                    breaks = 0;
                }
                "end" => return ended(&data),
                _ => {}
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    bail!(
        "lost the rollout's events; see it with curl {}{location}",
        credentials.url
    )
}

/// How a rollout's `end` event says it ended.
fn ended(end: &Value) -> anyhow::Result<()> {
    match end["status"].as_str() {
        Some("succeeded") => Ok(()),
        _ => bail!("{}", end["error"].as_str().unwrap_or("the rollout failed")),
    }
}

/// `builds:log APP [ID] -f`: the build's log as it is written (the newest
/// build without `ID`); an error if the build failed.
pub(crate) async fn follow_build(credentials: &Credentials, args: &[String]) -> anyhow::Result<()> {
    let [app, rest @ ..] = args else {
        bail!("usage: builds:log APP [ID] -f");
    };
    let app = store::AppName::new(app)?;
    let http = http()?;
    let base = format!("{}/api/v1/apps/{app}/builds", credentials.url);
    let id = match rest {
        [id] => id.clone(),
        [] => {
            let builds: Value = send(
                http.get(&base).bearer_auth(&credentials.token),
                &credentials.url,
            )
            .await?
            .json()
            .await?;
            builds[0]["id"]
                .as_str()
                .with_context(|| format!("{app} has no builds yet"))?
                .to_string()
        }
        _ => bail!("usage: builds:log APP [ID] -f"),
    };
    let url = format!("{base}/{id}/log");
    let mut stream = events(credentials, http.get(&url)).await?;
    while let Some(event) = stream.next().await {
        let event = event.with_context(|| format!("the log stream of build {id} broke"))?;
        match event.event.as_str() {
            "line" => println!("{}", event.data),
            "end" => {
                let end: Value = serde_json::from_str(&event.data).unwrap_or_default();
                return match end["status"].as_str() {
                    Some("succeeded") => Ok(()),
                    Some(status) => bail!("build {id} {status}"),
                    None => bail!("build {id} ended without saying how: see builds {app}"),
                };
            }
            _ => {}
        }
    }
    bail!("the log stream of build {id} ended before the build did")
}

/// `logs APP [-n N] [-f] [--since T] [--process P] [--instance I]`: the
/// lines on stdout, what is said about the machines on stderr.
pub(crate) async fn logs(credentials: &Credentials, args: &[String]) -> anyhow::Result<()> {
    let (app, params) = log_params(args)?;
    let http = http()?;
    let url = format!("{}/api/v1/apps/{app}/logs", credentials.url);
    let mut stream = events(credentials, http.get(&url).query(&params)).await?;
    while let Some(event) = stream.next().await {
        let event = event.with_context(|| format!("the log stream of {app} broke"))?;
        match event.event.as_str() {
            "line" => {
                let line: Value = serde_json::from_str(&event.data).unwrap_or_default();
                println!("{}", line["text"].as_str().unwrap_or_default());
            }
            "notice" => eprintln!("paz: {}", event.data),
            _ => {}
        }
    }
    Ok(())
}

/// The app and the query parameters of `logs`' words.
fn log_params(args: &[String]) -> anyhow::Result<(store::AppName, Vec<(&'static str, String)>)> {
    const USAGE: &str =
        "usage: logs APP [-n N] [-f] [--since TIME] [--process P] [--instance web.N]";
    let mut words = args.iter();
    let mut app = None;
    let mut params = Vec::new();
    while let Some(word) = words.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with('-') => (flag, Some(value.to_string())),
            _ => (word.as_str(), None),
        };
        let name = match flag {
            "-n" | "--num" | "--lines" => "lines",
            "--since" => "since",
            "--process" | "-p" => "process",
            "--instance" | "-i" => "instance",
            "-f" | "--follow" | "--tail" => {
                params.push(("follow", "true".to_string()));
                continue;
            }
            other if other.starts_with('-') => bail!("unknown option `{other}`: {USAGE}"),
            _ if app.is_none() => {
                app = Some(store::AppName::new(word)?);
                continue;
            }
            _ => bail!("{USAGE}"),
        };
        let value = match inline {
            Some(value) => value,
            None => words
                .next()
                .with_context(|| format!("{flag} needs a value: {USAGE}"))?
                .clone(),
        };
        params.push((name, value));
    }
    Ok((app.context(USAGE)?, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_words_become_query_parameters() {
        let (app, params) = log_params(&words("shop -n 5 -f --instance=web.2")).unwrap();
        assert_eq!(app.as_str(), "shop");
        assert_eq!(
            params,
            vec![
                ("lines", "5".to_string()),
                ("follow", "true".to_string()),
                ("instance", "web.2".to_string())
            ]
        );
        assert!(log_params(&words("shop --frob")).is_err());
        assert!(log_params(&words("shop -n")).is_err());
    }

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn rollout_verbs_become_api_calls() {
        let start = |verb, args| rollout_of(verb, &words(args));
        assert_eq!(
            start("deploy", "shop busybox:1"),
            Some(Start {
                path: "/apps/shop/releases".into(),
                body: json!({"image": "busybox:1"})
            })
        );
        assert_eq!(
            start("rollback", "shop v3").map(|s| s.body),
            Some(json!({"release": 3}))
        );
        assert_eq!(
            start("rollback", "shop").map(|s| s.body),
            Some(json!({"previous": true}))
        );
        assert_eq!(
            start("ps:restart", "shop").map(|s| s.path),
            Some("/apps/shop/actions/restart".into())
        );
        // Left to the verb, for its own usage error.
        for (verb, args) in [
            ("deploy", "shop"),
            ("deploy", "shop a b"),
            ("deploy", "shop --force"),
            ("rollback", "shop three"),
            ("rollback", "Shop 3"),
            ("ps:restart", "shop web"),
            ("releases", "shop"),
        ] {
            assert_eq!(start(verb, args), None, "{verb} {args}");
        }
    }
}
