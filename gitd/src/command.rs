//! What a client asked for in its SSH `exec` request: a git service on an app's
//! repo, or a verb. Parsed without ever running a shell.

use store::AppName;

/// The git services a client may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GitService {
    /// `git push`.
    ReceivePack,
    /// `git clone` and `git fetch`.
    UploadPack,
}

impl GitService {
    /// The `git` subcommand that serves it.
    pub(crate) fn subcommand(self) -> &'static str {
        match self {
            GitService::ReceivePack => "receive-pack",
            GitService::UploadPack => "upload-pack",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Git {
        service: GitService,
        app: AppName,
    },
    Verb {
        verb: String,
        args: Vec<String>,
        json: bool,
    },
}

/// Parses an exec request; the error is the one line the client sees.
pub(crate) fn parse(command: &[u8]) -> Result<Request, String> {
    let command = std::str::from_utf8(command)
        .map_err(|_| "the command is not UTF-8 text: run `help` to list the verbs".to_string())?
        .trim();
    for (prefix, service) in [
        ("git-receive-pack ", GitService::ReceivePack),
        ("git-upload-pack ", GitService::UploadPack),
        ("git receive-pack ", GitService::ReceivePack),
        ("git upload-pack ", GitService::UploadPack),
    ] {
        if let Some(path) = command.strip_prefix(prefix) {
            return Ok(Request::Git {
                service,
                app: repo_app(path.trim())?,
            });
        }
    }
    let words = shell_words::split(command)
        .map_err(|_| "cannot read the command: a quote is not closed".to_string())?;
    // A one-off's command is its own, `--json` and all.
    if matches!(
        words.first().map(String::as_str),
        Some("run" | "run:detached")
    ) {
        let mut words = words.into_iter();
        let verb = words.next().unwrap_or_default();
        return Ok(Request::Verb {
            verb,
            args: words.collect(),
            json: false,
        });
    }
    let json = words.iter().any(|word| word == "--json");
    let mut words = words.into_iter().filter(|word| word != "--json");
    let verb = words
        .next()
        .ok_or_else(|| "no command given: run `help` to list the verbs".to_string())?;
    Ok(Request::Verb {
        verb,
        args: words.collect(),
        json,
    })
}

/// The app a git path names: `'APP'`, `'/APP.git'`, `APP.git` and the like.
fn repo_app(path: &str) -> Result<AppName, String> {
    let refuse = |why: String| {
        format!("repository path `{path}` is invalid: {why}; use ssh://paz@HOST:2222/APP")
    };
    let unquoted = match path
        .strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
    {
        Some(inner) => inner,
        None => path,
    };
    if unquoted.contains(['\'', '"', '\\', ' ', '\t', '\n']) {
        return Err(refuse("it has quotes or spaces".to_string()));
    }
    let name = unquoted.strip_prefix('/').unwrap_or(unquoted);
    let name = name.strip_suffix(".git").unwrap_or(name);
    AppName::new(name).map_err(|error| refuse(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(app: &str, service: GitService) -> Request {
        Request::Git {
            service,
            app: AppName::new(app).unwrap(),
        }
    }

    #[test]
    fn git_paths_in_every_form_name_the_app() {
        for command in [
            "git-receive-pack 'demo'",
            "git-receive-pack '/demo'",
            "git-receive-pack '/demo.git'",
            "git-receive-pack demo.git",
            "git-receive-pack demo",
            "git receive-pack 'demo'",
        ] {
            assert_eq!(
                parse(command.as_bytes()),
                Ok(git("demo", GitService::ReceivePack)),
                "{command}"
            );
        }
        assert_eq!(
            parse(b"git-upload-pack '/demo.git'"),
            Ok(git("demo", GitService::UploadPack))
        );
    }

    #[test]
    fn bad_git_paths_are_refused_before_anything_runs() {
        for path in [
            "'../../etc'",
            "'/tmp/x'",
            "'a b'",
            "../x",
            "'/abs/path.git'",
            "'demo'; rm -rf /",
            "'de'mo'",
            "\"demo\"",
            "''",
            "'Demo'",
        ] {
            let error = parse(format!("git-receive-pack {path}").as_bytes()).unwrap_err();
            assert!(error.starts_with("repository path `"), "{path}: {error}");
            assert!(
                error.ends_with("use ssh://paz@HOST:2222/APP"),
                "{path}: {error}"
            );
        }
    }

    #[test]
    fn verbs_are_split_like_a_shell_would_but_never_run_by_one() {
        assert_eq!(
            parse(b"config:set demo 'GREETING=hello world' A=1 --json"),
            Ok(Request::Verb {
                verb: "config:set".into(),
                args: vec!["demo".into(), "GREETING=hello world".into(), "A=1".into()],
                json: true,
            })
        );
        assert_eq!(
            parse(b"apps:list; rm -rf /"),
            Ok(Request::Verb {
                verb: "apps:list;".into(),
                args: vec!["rm".into(), "-rf".into(), "/".into()],
                json: false,
            })
        );
        assert_eq!(
            parse(b"run demo sh -c 'echo out; exit 3' --json"),
            Ok(Request::Verb {
                verb: "run".into(),
                args: vec![
                    "demo".into(),
                    "sh".into(),
                    "-c".into(),
                    "echo out; exit 3".into(),
                    "--json".into()
                ],
                json: false,
            }),
            "a one-off's command keeps its words"
        );
        assert!(parse(b"config:set demo 'unclosed")
            .unwrap_err()
            .contains("quote is not closed"));
        assert!(parse(b"   ").unwrap_err().starts_with("no command given"));
        assert!(parse(&[0xff, 0xfe]).unwrap_err().contains("not UTF-8"));
    }
}
