//! Snapshots of every verb's text and JSON on a fixed store and a fixed
//! clock: what SSH users and `--json` scripts see, checked line by line. The
//! store is the real etcd; the rollouts the verbs hand off come from a
//! scripted deployer (the real one is proven in `paz/tests`), so that their
//! steps are the same at every run.

use std::sync::Arc;

use deployer::{DeployError, Step};
use expect_test::{expect, Expect};
use futures::future::BoxFuture;
use store::records::{ActiveState, Build, BuildStatus, Machine, ReleaseStatus, Role, UnitState};
use store::{AppName, ResolvedImage, Store};
use verbs::{Caller, Clock, Context};

/// 2026-12-01T10:00:00Z.
const NOW: u64 = 1_796_119_200;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPXPtgrudPE87hM+jcjQDB+EkVJSlSgWNZVoB204rbHk ana@laptop";

const MACHINE: &str = "8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e";

/// A deployer whose every rollout takes the same steps and serves the
/// release; `broken:1` fails its health check.
#[derive(Debug)]
struct Scripted {
    store: Store,
}

impl Scripted {
    async fn serve(store: Store, app: AppName, n: u64) -> Result<(), DeployError> {
        let keys = store.keys();
        let key = keys.release(&app, n);
        let mut release = store.get(&key).await?.expect("the release").value;
        if release.image.starts_with("broken@") {
            release.status = ReleaseStatus::Failed;
            store.put(&key, &release).await?;
            return Err(DeployError::Broken {
                unit: format!("{app}-v{n}-web-1"),
                reason: "failed: exit code 1".into(),
            });
        }
        release.status = ReleaseStatus::Active;
        store.put(&key, &release).await?;
        store.put(&keys.current(&app), &n).await?;
        Ok(())
    }
}

impl verbs::Rollouts for Scripted {
    fn roll_out(
        &self,
        app: AppName,
        n: u64,
        report: tokio::sync::mpsc::Sender<Step>,
    ) -> BoxFuture<'static, Result<(), DeployError>> {
        let store = self.store.clone();
        Box::pin(async move {
            let instance = format!("{app}-v{n}-web-1");
            let steps = [
                Step::Placed {
                    instance: instance.clone(),
                    machine: MACHINE.into(),
                },
                Step::Started {
                    instance: instance.clone(),
                },
            ];
            for step in steps {
                let _ = report.send(step).await;
            }
            Scripted::serve(store, app.clone(), n).await?;
            let steps = [
                Step::Ready {
                    instance,
                    routed: true,
                    seconds: 1.25,
                },
                Step::Released {
                    release: n,
                    url: format!("http://{app}.paz.test"),
                },
            ];
            for step in steps {
                let _ = report.send(step).await;
            }
            Ok(())
        })
    }

    fn restart(
        &self,
        app: AppName,
        report: tokio::sync::mpsc::Sender<Step>,
    ) -> BoxFuture<'static, Result<(), DeployError>> {
        let store = self.store.clone();
        Box::pin(async move {
            let current = store.get(&store.keys().current(&app)).await?;
            let n = current.expect("a release serves").value;
            let instance = format!("{app}-v{n}-web-1");
            let steps = [
                Step::Restarting {
                    instance: instance.clone(),
                },
                Step::Ready {
                    instance,
                    routed: true,
                    seconds: 0.5,
                },
                Step::Restarted {
                    app: app.to_string(),
                    release: n,
                },
            ];
            for step in steps {
                let _ = report.send(step).await;
            }
            Ok(())
        })
    }

    fn resolve_image(
        &self,
        reference: String,
    ) -> BoxFuture<'static, Result<ResolvedImage, DeployError>> {
        Box::pin(async move {
            let repository = reference.split(':').next().unwrap_or_default();
            Ok(ResolvedImage {
                image: format!("{repository}@sha256:{}", "ab".repeat(32)),
                source: Some(reference),
                exposed_ports: vec![8080],
            })
        })
    }

    fn image_owner(&self, _reference: &str) -> Option<AppName> {
        None
    }
}

struct Verbs {
    context: Context,
    admin: Caller,
    _data: tempfile::TempDir,
}

impl Verbs {
    /// Runs `line` as `caller` and shows what it printed: the text, then
    /// the JSON; or the error.
    async fn run_as(&self, caller: &Caller, line: &str, stdin: &[u8]) -> String {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        match verbs::run(&self.context, caller, &words[0], &words[1..], stdin).await {
            Ok(outcome) => format!(
                "{}\n--- json\n{}\n",
                outcome.text,
                serde_json::to_string_pretty(&outcome.json).unwrap()
            ),
            Err(error) => format!("error: {error}\n"),
        }
    }

    async fn check(&self, line: &str, expected: Expect) {
        expected.assert_eq(&self.run_as(&self.admin, line, b"").await);
    }
}

/// A store with what the other parts of Paz write (a machine, a build, a
/// unit and its state), and verbs on it with a fixed clock.
async fn fixed(test: &str) -> Verbs {
    let store = tests::test_store(test).await;
    let data = tests::temp_dir();
    let keys = store.keys();
    store
        .put(&keys.domain(), &"paz.test".to_string())
        .await
        .unwrap();
    let machine = Machine {
        addr: "10.0.0.7".into(),
        metadata: [("region".to_string(), "fra1".to_string())].into(),
        started_at: NOW - 3 * 3600 - 12 * 60,
        endpoint: None,
    };
    store
        .put(&keys.machine(MACHINE).unwrap(), &machine)
        .await
        .unwrap();
    let context = Context {
        store: store.clone(),
        data_dir: data.path().to_path_buf(),
        rollouts: Some(Arc::new(Scripted {
            store: store.clone(),
        })),
        hooks: None,
        clock: Clock::Fixed(NOW),
        rollout_record: None,
    };
    let admin = Caller {
        name: "ana".into(),
        role: Role::Admin,
        apps: vec![],
        token: false,
    };
    Verbs {
        context,
        admin,
        _data: data,
    }
}

/// What an agent and the builder would have written for app `demo`.
async fn runs_on_a_machine(verbs: &Verbs) {
    let store = &verbs.context.store;
    let keys = store.keys();
    let app = AppName::new("demo").unwrap();
    let unit = "demo-v2-web-1.service";
    store
        .put(
            &keys.unit(unit).unwrap(),
            &"[Unit]\nDescription=demo v2 web.1\n\n[Service]\nExecStart=/usr/bin/docker run demo\n"
                .to_string(),
        )
        .await
        .unwrap();
    store
        .put(&keys.schedule(unit).unwrap(), &MACHINE.to_string())
        .await
        .unwrap();
    let state = UnitState {
        machine: MACHINE.into(),
        active: ActiveState::Active,
        container: Some("c0ffee".into()),
        since: NOW - 95,
        reason: None,
        restarts: 0,
        pulling: false,
        exit_code: None,
    };
    store
        .put(&keys.unit_state(unit).unwrap(), &state)
        .await
        .unwrap();
    // Placed here now; the state is the last report of the machine it ran
    // on before (whose lease has not ended yet): not how it is now.
    let moved = "demo-v2-web-2.service";
    store
        .put(
            &keys.unit(moved).unwrap(),
            &"[Unit]\nDescription=demo v2 web.2\n".to_string(),
        )
        .await
        .unwrap();
    store
        .put(&keys.schedule(moved).unwrap(), &MACHINE.to_string())
        .await
        .unwrap();
    let stale = UnitState {
        machine: "a-machine-that-died".into(),
        ..state.clone()
    };
    store
        .put(&keys.unit_state(moved).unwrap(), &stale)
        .await
        .unwrap();
    let waiting = "demo-v2-worker-1.service";
    store
        .put(
            &keys.unit(waiting).unwrap(),
            &"[Unit]\nDescription=demo v2 worker.1\n".to_string(),
        )
        .await
        .unwrap();
    store
        .put(
            &keys.unplaced(waiting).unwrap(),
            &"no machine has region=ams3".to_string(),
        )
        .await
        .unwrap();
    let build = Build {
        git_sha: "4f2a9c1d0e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49".into(),
        status: BuildStatus::Succeeded,
        started_at: NOW - 600,
        finished_at: Some(NOW - 552),
        log_path: "builds/demo/1796118600-4f2a9c1.log".into(),
        buildpack: Some("static".into()),
        image: Some("registry.paz.test/demo@sha256:cd".into()),
        cache_key: None,
        error: None,
        by: "ana".into(),
    };
    store
        .put(&keys.build(&app, "1796118600-4f2a9c1").unwrap(), &build)
        .await
        .unwrap();
    let log = verbs.context.data_dir.join(&build.log_path);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(
        &log,
        "-----> Building with the static buildpack\n-----> Built\n",
    )
    .unwrap();
}

#[tokio::test]
async fn apps_and_their_settings() {
    let verbs = fixed("verb-output-apps").await;
    verbs
        .check(
            "apps:list",
            expect![[r#"
        no apps yet: create one with apps:create APP
        --- json
        []
    "#]],
        )
        .await;
    verbs
        .check(
            "apps:create demo",
            expect![[r#"
        created app demo
        --- json
        {
          "app": "demo"
        }
    "#]],
        )
        .await;
    verbs
        .check(
            "apps:create demo",
            expect![[r#"
        error: app `demo` already exists
    "#]],
        )
        .await;
    verbs
        .check(
            "apps:list",
            expect![[r#"
        demo
        --- json
        [
          "demo"
        ]
    "#]],
        )
        .await;
    verbs
        .check(
            "apps:info demo",
            expect![[r#"
                app        demo
                url        http://demo.paz.test
                domains    -
                port       from the image, else 5000
                scale      web=1 worker=0
                health     path=/ timeout=5 attempts=3
                https      redirect on once a name has a certificate, hsts off
                branch     main (or master)
                release    none yet
                --- json
                {
                  "app": {
                    "created_at": 1796119200,
                    "deploy": {
                      "branch": null,
                      "image_repo": null,
                      "tag_pattern": null
                    },
                    "domains": [],
                    "env": {},
                    "health": {
                      "attempts": 3,
                      "path": "/",
                      "timeout": 5
                    },
                    "https": {},
                    "name": "demo",
                    "port": null,
                    "scale": {
                      "web": 1,
                      "worker": 0
                    }
                  },
                  "current_release": null,
                  "url": "http://demo.paz.test"
                }
            "#]],
        )
        .await;
    verbs
        .check(
            "config:show demo",
            expect![[r#"
        demo has no config
        --- json
        {}
    "#]],
        )
        .await;
    verbs
        .check(
            "config:set demo GREETING=hello A=1",
            expect![[r#"
            set GREETING, A on demo; it takes effect with the next release
            --- json
            {
              "A": "1",
              "GREETING": "hello"
            }
        "#]],
        )
        .await;
    verbs
        .check(
            "config:get demo GREETING",
            expect![[r#"
        hello
        --- json
        {
          "GREETING": "hello"
        }
    "#]],
        )
        .await;
    verbs
        .check(
            "config:unset demo A",
            expect![[r#"
        unset A on demo; it takes effect with the next release
        --- json
        {
          "GREETING": "hello"
        }
    "#]],
        )
        .await;
    verbs
        .check(
            "config:show demo",
            expect![[r#"
        GREETING=hello
        --- json
        {
          "GREETING": "hello"
        }
    "#]],
        )
        .await;
    verbs
        .check(
            "domains:add demo www.example.com",
            expect![[r#"
            added www.example.com to demo
            --- json
            [
              "www.example.com"
            ]
        "#]],
        )
        .await;
    verbs
        .check(
            "domains:list demo",
            expect![[r#"
        demo.paz.test
        www.example.com
        --- json
        [
          "demo.paz.test",
          "www.example.com"
        ]
    "#]],
        )
        .await;
    verbs
        .check(
            "domains:remove demo www.example.com",
            expect![[r#"
            removed www.example.com from demo
            --- json
            []
        "#]],
        )
        .await;
    verbs
        .check(
            "health:set demo path=/up timeout=3 attempts=5",
            expect![[r#"
            demo health check: GET /up within 3s, 5 attempts
            --- json
            {
              "attempts": 5,
              "path": "/up",
              "timeout": 3
            }
        "#]],
        )
        .await;
    verbs
        .check(
            "ports:set demo 8080",
            expect![[r#"
        demo listens on port 8080; it takes effect with the next release
        --- json
        {
          "app": "demo",
          "port": 8080
        }
    "#]],
        )
        .await;
    verbs
        .check(
            "deploy:follow demo demo v*",
            expect![[r#"
            demo now deploys each new tag of demo matching v*
            --- json
            {
              "branch": null,
              "image_repo": "demo",
              "tag_pattern": "v*"
            }
        "#]],
        )
        .await;
    verbs
        .check(
            "apps:info demo",
            expect![[r#"
                app        demo
                url        http://demo.paz.test
                domains    -
                port       8080
                scale      web=1 worker=0
                health     path=/up timeout=3 attempts=5
                https      redirect on once a name has a certificate, hsts off
                branch     main (or master)
                release    none yet
                --- json
                {
                  "app": {
                    "created_at": 1796119200,
                    "deploy": {
                      "branch": null,
                      "image_repo": "demo",
                      "tag_pattern": "v*"
                    },
                    "domains": [],
                    "env": {
                      "GREETING": "hello"
                    },
                    "health": {
                      "attempts": 5,
                      "path": "/up",
                      "timeout": 3
                    },
                    "https": {},
                    "name": "demo",
                    "port": 8080,
                    "scale": {
                      "web": 1,
                      "worker": 0
                    }
                  },
                  "current_release": null,
                  "url": "http://demo.paz.test"
                }
            "#]],
        )
        .await;
    verbs.check("apps:destroy demo", expect![[r#"
        error: this deletes app `demo`, its instances, releases, builds and git repo: run apps:destroy demo --force
    "#]]).await;
    verbs
        .check(
            "apps:destroy demo --force",
            expect![[r#"
        destroyed app demo
        --- json
        {
          "app": "demo"
        }
    "#]],
        )
        .await;
    verbs
        .check(
            "apps:info demo",
            expect![[r#"
        error: app `demo` does not exist: create it with apps:create demo
    "#]],
        )
        .await;
}

#[tokio::test]
async fn releases_rollouts_and_instances() {
    let verbs = fixed("verb-output-releases").await;
    verbs
        .check(
            "apps:create demo",
            expect![[r#"
        created app demo
        --- json
        {
          "app": "demo"
        }
    "#]],
        )
        .await;
    verbs
        .check(
            "releases demo",
            expect![[r#"
        demo has no releases yet: git push or deploy an image
        --- json
        []
    "#]],
        )
        .await;
    verbs
        .check(
            "ps:scale demo web=2",
            expect![[r#"
                demo will run at this scale once it is deployed
                --- json
                {
                  "app": "demo",
                  "scale": {
                    "web": 2
                  }
                }
            "#]],
        )
        .await;
    verbs.check("deploy demo demo:1", expect![[r#"
        -----> demo:1 is demo@sha256:abababababababababababababababababababababababababababababababab
        -----> Starting demo-v1-web-1 on machine 8c1f2a9e
               demo-v1-web-1 started
               demo-v1-web-1 healthy after 1.2 s
        -----> Released v1: http://demo.paz.test
        --- json
        {
          "app": "demo",
          "release": 1,
          "steps": [
            {
              "step": "note",
              "text": "demo:1 is demo@sha256:abababababababababababababababababababababababababababababababab"
            },
            {
              "instance": "demo-v1-web-1",
              "machine": "8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e",
              "step": "placed"
            },
            {
              "instance": "demo-v1-web-1",
              "step": "started"
            },
            {
              "instance": "demo-v1-web-1",
              "routed": true,
              "seconds": 1.25,
              "step": "ready"
            },
            {
              "release": 1,
              "step": "released",
              "url": "http://demo.paz.test"
            }
          ]
        }
    "#]]).await;
    verbs
        .check(
            "deploy demo broken:1",
            expect![[r#"
                error: -----> broken:1 is broken@sha256:abababababababababababababababababababababababababababababababab
                -----> Starting demo-v2-web-1 on machine 8c1f2a9e
                       demo-v2-web-1 started
                demo-v2-web-1 failed: exit code 1
            "#]],
        )
        .await;
    verbs
        .check(
            "config:set demo GREETING=hi",
            expect![[r#"
        set GREETING on demo
        -----> Starting demo-v3-web-1 on machine 8c1f2a9e
               demo-v3-web-1 started
               demo-v3-web-1 healthy after 1.2 s
        -----> Released v3: http://demo.paz.test
        --- json
        {
          "GREETING": "hi"
        }
    "#]],
        )
        .await;
    // Each rollout a verb made has its record: kind, who, how it ended, steps.
    let store = &verbs.context.store;
    let demo = store::AppName::new("demo").unwrap();
    let records = store.list(&store.keys().rollouts(&demo)).await.unwrap();
    let summary: Vec<String> = records
        .entries
        .iter()
        .map(|entry| {
            let r = &entry.value;
            format!(
                "{} by {} v{:?} {:?} {} steps, error {:?}",
                r.kind,
                r.by,
                r.release,
                r.status,
                r.steps.len(),
                r.error
            )
        })
        .collect();
    expect![[r#"
        [
            "deploy by ana vSome(1) Succeeded 5 steps, error None",
            "deploy by ana vSome(2) Failed 3 steps, error Some(\"demo-v2-web-1 failed: exit code 1\")",
            "config by ana vSome(3) Succeeded 4 steps, error None",
        ]
    "#]].assert_debug_eq(&summary);
    verbs.check("releases demo", expect![[r#"
        v3    current    config   ana          2026-12-01T10:00:00Z  demo@sha256:abababababababababababababababababababababababababababababababab (from demo:1)
        v2    failed     image    ana          2026-12-01T10:00:00Z  broken@sha256:abababababababababababababababababababababababababababababababab (from broken:1)
        v1    active     image    ana          2026-12-01T10:00:00Z  demo@sha256:abababababababababababababababababababababababababababababababab (from demo:1)
        --- json
        [
          {
            "by": "ana",
            "cause": "image",
            "created_at": 1796119200,
            "env": {},
            "exposed_ports": [
              8080
            ],
            "git_sha": null,
            "image": "demo@sha256:abababababababababababababababababababababababababababababababab",
            "n": 1,
            "processes": {},
            "release_command": null,
            "source": "demo:1",
            "status": "active"
          },
          {
            "by": "ana",
            "cause": "image",
            "created_at": 1796119200,
            "env": {},
            "exposed_ports": [
              8080
            ],
            "git_sha": null,
            "image": "broken@sha256:abababababababababababababababababababababababababababababababab",
            "n": 2,
            "processes": {},
            "release_command": null,
            "source": "broken:1",
            "status": "failed"
          },
          {
            "by": "ana",
            "cause": "config",
            "created_at": 1796119200,
            "env": {
              "GREETING": "hi"
            },
            "exposed_ports": [
              8080
            ],
            "git_sha": null,
            "image": "demo@sha256:abababababababababababababababababababababababababababababababab",
            "n": 3,
            "processes": {},
            "release_command": null,
            "source": "demo:1",
            "status": "active"
          }
        ]
    "#]]).await;
    verbs
        .check(
            "rollback demo",
            expect![[r#"
        -----> Starting demo-v4-web-1 on machine 8c1f2a9e
               demo-v4-web-1 started
               demo-v4-web-1 healthy after 1.2 s
        -----> Released v4: http://demo.paz.test
        --- json
        {
          "app": "demo",
          "release": 4,
          "steps": [
            {
              "instance": "demo-v4-web-1",
              "machine": "8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e",
              "step": "placed"
            },
            {
              "instance": "demo-v4-web-1",
              "step": "started"
            },
            {
              "instance": "demo-v4-web-1",
              "routed": true,
              "seconds": 1.25,
              "step": "ready"
            },
            {
              "release": 4,
              "step": "released",
              "url": "http://demo.paz.test"
            }
          ]
        }
    "#]],
        )
        .await;
    verbs
        .check(
            "rollback demo 3",
            expect![[r#"
        -----> Starting demo-v5-web-1 on machine 8c1f2a9e
               demo-v5-web-1 started
               demo-v5-web-1 healthy after 1.2 s
        -----> Released v5: http://demo.paz.test
        --- json
        {
          "app": "demo",
          "release": 5,
          "steps": [
            {
              "instance": "demo-v5-web-1",
              "machine": "8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e",
              "step": "placed"
            },
            {
              "instance": "demo-v5-web-1",
              "step": "started"
            },
            {
              "instance": "demo-v5-web-1",
              "routed": true,
              "seconds": 1.25,
              "step": "ready"
            },
            {
              "release": 5,
              "step": "released",
              "url": "http://demo.paz.test"
            }
          ]
        }
    "#]],
        )
        .await;
    verbs
        .check(
            "ps:scale demo web=1 worker=1",
            expect![[r#"
                error: process type `worker` is not in v5's Procfile (it has web): nothing changed
            "#]],
        )
        .await;
    verbs
        .check("ps:scale demo web=1 Bad=2", expect![[r#"
            error: `Bad=2`: process type `Bad` is invalid: it does not start with a lowercase letter; use 1 to 32 lowercase letters, digits and underscores, starting with a letter
        "#]])
        .await;
    // Limits: each change a release of the serving image; bad input
    // changes nothing.
    for line in [
        "resource:limit demo memory=lots",
        "resource:limit demo memory=1k",
        "resource:limit demo cpus=0",
        "resource:limit demo disk=1g",
        "resource:limit demo --process worker memory=64m",
        "resource:limit demo --process Web! memory=64m",
        "resource:limit demo",
        "resource:limit-clear demo --process web",
    ] {
        let before = verbs.run_as(&verbs.admin, "apps:info demo", b"").await;
        let said = verbs.run_as(&verbs.admin, line, b"").await;
        assert!(said.starts_with("error: "), "{line}: {said}");
        let after = verbs.run_as(&verbs.admin, "apps:info demo", b"").await;
        assert_eq!(before, after, "{line} changed nothing");
    }
    verbs
        .check(
            "resource:limit demo memory=lots",
            expect![[r#"
            error: `memory=lots`: memory `lots` is not a size such as 512m: nothing changed
        "#]],
        )
        .await;
    verbs
        .check(
            "resource:limit demo --process worker memory=64m",
            expect![[r#"
            error: process type `worker` is not in v5's Procfile (it has web): nothing changed
        "#]],
        )
        .await;
    verbs
        .check(
            "resource:report demo",
            expect![[r#"
            process       memory    cpus
            (all)         -         -
            web           -         -
            --- json
            {
              "app": "demo",
              "effective": {
                "web": {}
              },
              "resources": {}
            }
        "#]],
        )
        .await;
    verbs
        .check(
            "resource:limit demo memory=512m cpus=1.5",
            expect![[r#"
            set memory 512m and cpus 1.5 for every process of demo
            -----> Starting demo-v6-web-1 on machine 8c1f2a9e
                   demo-v6-web-1 started
                   demo-v6-web-1 healthy after 1.2 s
            -----> Released v6: http://demo.paz.test
            --- json
            {
              "all": {
                "memory": 536870912,
                "nano_cpus": 1500000000
              }
            }
        "#]],
        )
        .await;
    verbs
        .check(
            "resource:limit demo --process web memory=256M",
            expect![[r#"
            set memory 256m for demo's web processes
            -----> Starting demo-v7-web-1 on machine 8c1f2a9e
                   demo-v7-web-1 started
                   demo-v7-web-1 healthy after 1.2 s
            -----> Released v7: http://demo.paz.test
            --- json
            {
              "all": {
                "memory": 536870912,
                "nano_cpus": 1500000000
              },
              "processes": {
                "web": {
                  "memory": 268435456
                }
              }
            }
        "#]],
        )
        .await;
    verbs
        .check(
            "resource:report demo",
            expect![[r#"
            process       memory    cpus
            (all)         512m      1.5
            web           256m      1.5
            --- json
            {
              "app": "demo",
              "effective": {
                "web": {
                  "memory": 268435456,
                  "nano_cpus": 1500000000
                }
              },
              "resources": {
                "all": {
                  "memory": 536870912,
                  "nano_cpus": 1500000000
                },
                "processes": {
                  "web": {
                    "memory": 268435456
                  }
                }
              }
            }
        "#]],
        )
        .await;
    verbs
        .check(
            "resource:limit-clear demo --process web",
            expect![[r#"
            lifted the limits of demo's web processes
            -----> Starting demo-v8-web-1 on machine 8c1f2a9e
                   demo-v8-web-1 started
                   demo-v8-web-1 healthy after 1.2 s
            -----> Released v8: http://demo.paz.test
            --- json
            {
              "all": {
                "memory": 536870912,
                "nano_cpus": 1500000000
              }
            }
        "#]],
        )
        .await;
    let other = Caller {
        name: "bo".into(),
        role: Role::Deployer,
        apps: vec![AppName::new("other").unwrap()],
        token: false,
    };
    for line in [
        "resource:limit demo memory=64m",
        "resource:limit-clear demo",
        "resource:report demo",
    ] {
        let said = verbs.run_as(&other, line, b"").await;
        assert!(
            said.starts_with("error: `bo` may not use app `demo`"),
            "{line}: {said}"
        );
    }
    verbs
        .check(
            "ps:restart demo",
            expect![[r#"
                -----> Restarting demo-v8-web-1
                       demo-v8-web-1 healthy after 0.5 s
                -----> Restarted demo v8
                --- json
                {
                  "app": "demo",
                  "release": 8,
                  "steps": [
                    {
                      "instance": "demo-v8-web-1",
                      "step": "restarting"
                    },
                    {
                      "instance": "demo-v8-web-1",
                      "routed": true,
                      "seconds": 0.5,
                      "step": "ready"
                    },
                    {
                      "app": "demo",
                      "release": 8,
                      "step": "restarted"
                    }
                  ]
                }
            "#]],
        )
        .await;
    runs_on_a_machine(&verbs).await;
    verbs
        .check(
            "ps demo",
            expect![[r#"
                === web (2)
                demo-v2-web-1  8c1f2a9e77d1  up        95s
                demo-v2-web-2  8c1f2a9e77d1  waiting   -
                === worker (1)
                demo-v2-worker-1  -             waiting   -
                --- json
                [
                  {
                    "machine": "8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e",
                    "state": {
                      "active": "active",
                      "container": "c0ffee",
                      "machine": "8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e",
                      "reason": null,
                      "restarts": 0,
                      "since": 1796119105
                    },
                    "unit": "demo-v2-web-1.service",
                    "unplaced": null
                  },
                  {
                    "machine": "8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e",
                    "state": null,
                    "unit": "demo-v2-web-2.service",
                    "unplaced": null
                  },
                  {
                    "machine": null,
                    "state": null,
                    "unit": "demo-v2-worker-1.service",
                    "unplaced": "no machine has region=ams3"
                  }
                ]
            "#]],
        )
        .await;
    verbs
        .check(
            "units:list demo",
            expect![[r#"
                demo-v2-web-1.service  8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e  active
                demo-v2-web-2.service  8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e  placed
                demo-v2-worker-1.service  -  unplaced  (no machine has region=ams3)
                --- json
                [
                  {
                    "machine": "8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e",
                    "state": {
                      "active": "active",
                      "container": "c0ffee",
                      "machine": "8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e",
                      "reason": null,
                      "restarts": 0,
                      "since": 1796119105
                    },
                    "unit": "demo-v2-web-1.service",
                    "unplaced": null
                  },
                  {
                    "machine": "8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e",
                    "state": null,
                    "unit": "demo-v2-web-2.service",
                    "unplaced": null
                  },
                  {
                    "machine": null,
                    "state": null,
                    "unit": "demo-v2-worker-1.service",
                    "unplaced": "no machine has region=ams3"
                  }
                ]
            "#]],
        )
        .await;
    verbs.check("units:cat demo-v2-web-1.service", expect![[r#"
        [Unit]
        Description=demo v2 web.1

        [Service]
        ExecStart=/usr/bin/docker run demo
        --- json
        {
          "text": "[Unit]\nDescription=demo v2 web.1\n\n[Service]\nExecStart=/usr/bin/docker run demo\n",
          "unit": "demo-v2-web-1.service"
        }
    "#]]).await;
    verbs.check("machines:list", expect![[r#"
        8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e  10.0.0.7  region=fra1  2 units  up since 2026-12-01T06:48:00Z (3h 12m)
        --- json
        [
          {
            "id": "8c1f2a9e77d14b6f9a0e5d3c2b1a0f9e",
            "machine": {
              "addr": "10.0.0.7",
              "metadata": {
                "region": "fra1"
              },
              "started_at": 1796107680
            },
            "units": 2
          }
        ]
    "#]]).await;
    verbs
        .check(
            "builds demo",
            expect![[r#"
        1796118600-4f2a9c1  succeeded  4f2a9c1  static        48s  ana
        --- json
        [
          {
            "build": {
              "buildpack": "static",
              "by": "ana",
              "cache_key": null,
              "error": null,
              "finished_at": 1796118648,
              "git_sha": "4f2a9c1d0e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49",
              "image": "registry.paz.test/demo@sha256:cd",
              "log_path": "builds/demo/1796118600-4f2a9c1.log",
              "started_at": 1796118600,
              "status": "succeeded"
            },
            "id": "1796118600-4f2a9c1"
          }
        ]
    "#]],
        )
        .await;
    verbs
        .check(
            "builds:log demo",
            expect![[r#"
        -----> Building with the static buildpack
        -----> Built
        --- json
        {
          "id": "1796118600-4f2a9c1",
          "log": "-----> Building with the static buildpack\n-----> Built\n"
        }
    "#]],
        )
        .await;
}

#[tokio::test]
async fn keys_tokens_help_and_rights() {
    let verbs = fixed("verb-output-keys").await;
    verbs
        .check(
            "ssh-keys:list",
            expect![[r#"
                no SSH keys: add one with ssh-keys:add NAME < key.pub
                --- json
                []
            "#]],
        )
        .await;
    let added = verbs
        .run_as(
            &verbs.admin,
            "ssh-keys:add ana-laptop --role deployer --apps demo",
            KEY.as_bytes(),
        )
        .await;
    expect![[r#"
        added key ana-laptop  deployer  SHA256:KI0mWv0zacvp2jtGd0NTyMvGhFvW860HzKy3Vzqv/NY  demo
        --- json
        {
          "apps": [
            "demo"
          ],
          "fingerprint": "SHA256:KI0mWv0zacvp2jtGd0NTyMvGhFvW860HzKy3Vzqv/NY",
          "name": "ana-laptop",
          "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPXPtgrudPE87hM+jcjQDB+EkVJSlSgWNZVoB204rbHk ana@laptop",
          "role": "deployer"
        }
    "#]].assert_eq(&added);
    verbs.check("ssh-keys:list", expect![[r#"
        ana-laptop  deployer  SHA256:KI0mWv0zacvp2jtGd0NTyMvGhFvW860HzKy3Vzqv/NY  demo
        --- json
        [
          {
            "apps": [
              "demo"
            ],
            "fingerprint": "SHA256:KI0mWv0zacvp2jtGd0NTyMvGhFvW860HzKy3Vzqv/NY",
            "name": "ana-laptop",
            "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPXPtgrudPE87hM+jcjQDB+EkVJSlSgWNZVoB204rbHk ana@laptop",
            "role": "deployer"
          }
        ]
    "#]]).await;
    verbs
        .check("ssh-keys:remove ana-laptop", expect![[r#"
            removed key ana-laptop  deployer  SHA256:KI0mWv0zacvp2jtGd0NTyMvGhFvW860HzKy3Vzqv/NY  demo
            --- json
            {
              "apps": [
                "demo"
              ],
              "fingerprint": "SHA256:KI0mWv0zacvp2jtGd0NTyMvGhFvW860HzKy3Vzqv/NY",
              "name": "ana-laptop",
              "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPXPtgrudPE87hM+jcjQDB+EkVJSlSgWNZVoB204rbHk ana@laptop",
              "role": "deployer"
            }
        "#]])
        .await;
    let created = verbs
        .run_as(
            &verbs.admin,
            "tokens:create ci --role deployer --apps demo",
            b"",
        )
        .await;
    let secret = created
        .lines()
        .find_map(|line| line.strip_prefix("secret (shown once, keep it safe): "))
        .expect("the secret is shown")
        .to_string();
    expect![[r#"
        created token ci  deployer  demo
        secret (shown once, keep it safe): <secret>
        --- json
        {
          "apps": [
            "demo"
          ],
          "name": "ci",
          "role": "deployer",
          "secret": "<secret>",
          "signing_secret": null
        }
    "#]]
    .assert_eq(&created.replace(&secret, "<secret>"));
    verbs
        .check(
            "tokens:list",
            expect![[r#"
        ci  deployer  demo
        --- json
        [
          {
            "apps": [
              "demo"
            ],
            "name": "ci",
            "role": "deployer"
          }
        ]
    "#]],
        )
        .await;
    verbs
        .check(
            "tokens:revoke ci",
            expect![[r#"
        revoked token ci
        --- json
        {
          "name": "ci"
        }
    "#]],
        )
        .await;
    verbs.check("help", expect![[r#"
        Paz verbs (add --json for machine-readable output):
          help                                                                  list the verbs
          apps:list                                                             list the apps you may use
          apps:create APP                                                       create an app (admin)
          apps:info APP                                                         show an app's settings
          apps:destroy APP --force                                              delete an app, its releases and its repo (admin)
          ssh-keys:list                                                         list the SSH keys (admin)
          ssh-keys:add NAME [--role admin|deployer] [--apps A,B] < key.pub      add the public key on stdin (admin)
          ssh-keys:remove NAME|FINGERPRINT                                      remove an SSH key (admin)
          tokens:list                                                           list the API tokens (admin)
          tokens:create NAME [--role admin|deployer|machine] [--apps A,B]       create an API token and print its secret once (admin)
          tokens:revoke NAME                                                    revoke an API token (admin)
          config:show APP                                                       show an app's environment
          config:get APP KEY                                                    print one environment variable
          config:set APP KEY=VALUE ...                                          set environment variables
          config:unset APP KEY ...                                              remove environment variables
          domains:list APP                                                      list the domains routed to an app
          domains:add APP DOMAIN                                                route a domain to an app
          domains:remove APP DOMAIN                                             stop routing a domain to an app
          certs:list                                                            list the certificates every proxy serves: domain, state, expiry, issuer
          certs:add DOMAIN < bundle.pem                                         serve the certificate chain and private key on stdin for DOMAIN (or *.DOMAIN)
          certs:remove DOMAIN                                                   stop serving a certificate
          certs:renew DOMAIN                                                    order an ACME certificate again now
          https:redirect APP on|off|default                                     answer http:// with a 308 to https:// (default: on once a name has a certificate)
          https:hsts APP on|off                                                 send Strict-Transport-Security over HTTPS (off by default)
          builds APP                                                            list an app's builds, newest first
          logs APP [-n N] [-f] [--since TIME] [--process P] [--instance web.N]  print an app's log lines from every machine, merged by time (-f follows)
          machines:list                                                         list the machines and their units (admin)
          units:list [APP]                                                      list units, where they run and their state
          units:cat UNIT                                                        print a unit file
          builds:log APP [ID]                                                   print a build's log (the newest by default)
          health:set APP [path=/up] [timeout=5] [attempts=3]                    set how new instances are checked
          resource:limit APP [--process TYPE] memory=SIZE|cpus=N...             limit the memory (swap included) and CPUs of every process, or of one type (none lifts a limit)
          resource:limit-clear APP [--process TYPE]                             lift the limits of every process, or a type's own
          resource:report APP                                                   show the limits as set and what each process type gets
          ports:set APP PORT|default                                            set the port the app listens on ($PORT; default: the image's EXPOSE, else 5000)
          releases APP                                                          list an app's releases, newest first
          deploy APP IMAGE                                                      release IMAGE with the app's env and roll it out
          rollback APP [N]                                                      release an earlier release's image and env again (default: the one before)
          deploy:follow APP REPO [TAG-GLOB]                                     deploy each new tag of REPO (matching TAG-GLOB) pushed to Paz's registry
          ps APP                                                                list an app's instances
          run APP COMMAND...                                                    run COMMAND in a one-off container of the serving release, attached (with a TTY under ssh -t); its exit code is yours
          run:detached APP COMMAND...                                           run COMMAND in a one-off container whose output goes to the app's logs
          run:list APP                                                          list an app's one-off containers
          run:stop APP ID                                                       stop a one-off and remove its container
          cron:list APP                                                         list the app's cron jobs (app.json): next run, last run and its exit code, in UTC
          cron:run APP ID                                                       run a cron job now, as a detached one-off
          ps:restart APP                                                        restart an app's instances one at a time
          ps:scale APP TYPE=N...                                                run N instances of each process type (web, or any the Procfile names)
        --- json
        [
          {
            "summary": "list the verbs",
            "usage": "help",
            "verb": "help"
          },
          {
            "summary": "list the apps you may use",
            "usage": "apps:list",
            "verb": "apps:list"
          },
          {
            "summary": "create an app (admin)",
            "usage": "apps:create APP",
            "verb": "apps:create"
          },
          {
            "summary": "show an app's settings",
            "usage": "apps:info APP",
            "verb": "apps:info"
          },
          {
            "summary": "delete an app, its releases and its repo (admin)",
            "usage": "apps:destroy APP --force",
            "verb": "apps:destroy"
          },
          {
            "summary": "list the SSH keys (admin)",
            "usage": "ssh-keys:list",
            "verb": "ssh-keys:list"
          },
          {
            "summary": "add the public key on stdin (admin)",
            "usage": "ssh-keys:add NAME [--role admin|deployer] [--apps A,B] < key.pub",
            "verb": "ssh-keys:add"
          },
          {
            "summary": "remove an SSH key (admin)",
            "usage": "ssh-keys:remove NAME|FINGERPRINT",
            "verb": "ssh-keys:remove"
          },
          {
            "summary": "list the API tokens (admin)",
            "usage": "tokens:list",
            "verb": "tokens:list"
          },
          {
            "summary": "create an API token and print its secret once (admin)",
            "usage": "tokens:create NAME [--role admin|deployer|machine] [--apps A,B]",
            "verb": "tokens:create"
          },
          {
            "summary": "revoke an API token (admin)",
            "usage": "tokens:revoke NAME",
            "verb": "tokens:revoke"
          },
          {
            "summary": "show an app's environment",
            "usage": "config:show APP",
            "verb": "config:show"
          },
          {
            "summary": "print one environment variable",
            "usage": "config:get APP KEY",
            "verb": "config:get"
          },
          {
            "summary": "set environment variables",
            "usage": "config:set APP KEY=VALUE ...",
            "verb": "config:set"
          },
          {
            "summary": "remove environment variables",
            "usage": "config:unset APP KEY ...",
            "verb": "config:unset"
          },
          {
            "summary": "list the domains routed to an app",
            "usage": "domains:list APP",
            "verb": "domains:list"
          },
          {
            "summary": "route a domain to an app",
            "usage": "domains:add APP DOMAIN",
            "verb": "domains:add"
          },
          {
            "summary": "stop routing a domain to an app",
            "usage": "domains:remove APP DOMAIN",
            "verb": "domains:remove"
          },
          {
            "summary": "list the certificates every proxy serves: domain, state, expiry, issuer",
            "usage": "certs:list",
            "verb": "certs:list"
          },
          {
            "summary": "serve the certificate chain and private key on stdin for DOMAIN (or *.DOMAIN)",
            "usage": "certs:add DOMAIN < bundle.pem",
            "verb": "certs:add"
          },
          {
            "summary": "stop serving a certificate",
            "usage": "certs:remove DOMAIN",
            "verb": "certs:remove"
          },
          {
            "summary": "order an ACME certificate again now",
            "usage": "certs:renew DOMAIN",
            "verb": "certs:renew"
          },
          {
            "summary": "answer http:// with a 308 to https:// (default: on once a name has a certificate)",
            "usage": "https:redirect APP on|off|default",
            "verb": "https:redirect"
          },
          {
            "summary": "send Strict-Transport-Security over HTTPS (off by default)",
            "usage": "https:hsts APP on|off",
            "verb": "https:hsts"
          },
          {
            "summary": "list an app's builds, newest first",
            "usage": "builds APP",
            "verb": "builds"
          },
          {
            "summary": "print an app's log lines from every machine, merged by time (-f follows)",
            "usage": "logs APP [-n N] [-f] [--since TIME] [--process P] [--instance web.N]",
            "verb": "logs"
          },
          {
            "summary": "list the machines and their units (admin)",
            "usage": "machines:list",
            "verb": "machines:list"
          },
          {
            "summary": "list units, where they run and their state",
            "usage": "units:list [APP]",
            "verb": "units:list"
          },
          {
            "summary": "print a unit file",
            "usage": "units:cat UNIT",
            "verb": "units:cat"
          },
          {
            "summary": "print a build's log (the newest by default)",
            "usage": "builds:log APP [ID]",
            "verb": "builds:log"
          },
          {
            "summary": "set how new instances are checked",
            "usage": "health:set APP [path=/up] [timeout=5] [attempts=3]",
            "verb": "health:set"
          },
          {
            "summary": "limit the memory (swap included) and CPUs of every process, or of one type (none lifts a limit)",
            "usage": "resource:limit APP [--process TYPE] memory=SIZE|cpus=N...",
            "verb": "resource:limit"
          },
          {
            "summary": "lift the limits of every process, or a type's own",
            "usage": "resource:limit-clear APP [--process TYPE]",
            "verb": "resource:limit-clear"
          },
          {
            "summary": "show the limits as set and what each process type gets",
            "usage": "resource:report APP",
            "verb": "resource:report"
          },
          {
            "summary": "set the port the app listens on ($PORT; default: the image's EXPOSE, else 5000)",
            "usage": "ports:set APP PORT|default",
            "verb": "ports:set"
          },
          {
            "summary": "list an app's releases, newest first",
            "usage": "releases APP",
            "verb": "releases"
          },
          {
            "summary": "release IMAGE with the app's env and roll it out",
            "usage": "deploy APP IMAGE",
            "verb": "deploy"
          },
          {
            "summary": "release an earlier release's image and env again (default: the one before)",
            "usage": "rollback APP [N]",
            "verb": "rollback"
          },
          {
            "summary": "deploy each new tag of REPO (matching TAG-GLOB) pushed to Paz's registry",
            "usage": "deploy:follow APP REPO [TAG-GLOB]",
            "verb": "deploy:follow"
          },
          {
            "summary": "list an app's instances",
            "usage": "ps APP",
            "verb": "ps"
          },
          {
            "summary": "run COMMAND in a one-off container of the serving release, attached (with a TTY under ssh -t); its exit code is yours",
            "usage": "run APP COMMAND...",
            "verb": "run"
          },
          {
            "summary": "run COMMAND in a one-off container whose output goes to the app's logs",
            "usage": "run:detached APP COMMAND...",
            "verb": "run:detached"
          },
          {
            "summary": "list an app's one-off containers",
            "usage": "run:list APP",
            "verb": "run:list"
          },
          {
            "summary": "stop a one-off and remove its container",
            "usage": "run:stop APP ID",
            "verb": "run:stop"
          },
          {
            "summary": "list the app's cron jobs (app.json): next run, last run and its exit code, in UTC",
            "usage": "cron:list APP",
            "verb": "cron:list"
          },
          {
            "summary": "run a cron job now, as a detached one-off",
            "usage": "cron:run APP ID",
            "verb": "cron:run"
          },
          {
            "summary": "restart an app's instances one at a time",
            "usage": "ps:restart APP",
            "verb": "ps:restart"
          },
          {
            "summary": "run N instances of each process type (web, or any the Procfile names)",
            "usage": "ps:scale APP TYPE=N...",
            "verb": "ps:scale"
          }
        ]
    "#]]).await;
    verbs
        .check(
            "apps:frobnicate",
            expect![[r#"
        error: unknown verb `apps:frobnicate`: run `help` to list the verbs
    "#]],
        )
        .await;
    // A deployer of another app learns nothing of this one.
    verbs
        .check(
            "apps:create demo",
            expect![[r#"
        created app demo
        --- json
        {
          "app": "demo"
        }
    "#]],
        )
        .await;
    let other = Caller {
        name: "bo".into(),
        role: Role::Deployer,
        apps: vec![AppName::new("other").unwrap()],
        token: false,
    };
    expect![[r#"
        error: `bo` may not use app `demo`: its apps are other; an admin can add it with ssh-keys:add --apps
    "#]].assert_eq(&verbs.run_as(&other, "apps:info demo", b"").await);
    expect![[r#"
        no apps yet: create one with apps:create APP
        --- json
        []
    "#]]
    .assert_eq(&verbs.run_as(&other, "apps:list", b"").await);
    expect![[r#"
        error: `bo` is a deployer and may not list machines: that needs the admin role
    "#]]
    .assert_eq(&verbs.run_as(&other, "machines:list", b"").await);
}
