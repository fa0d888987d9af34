//! Unit files: documented examples from fleet and systemd, every `[X-Fleet]`
//! rule, the templates Paz renders, and refusals with their line numbers.

use expect_test::expect;
use units::{parse_unit, render_instance, Exec, Instance, UnitFile};

#[test]
fn fleets_documented_hello_unit_parses() {
    // fleet's Documentation/examples: a unit that runs a container, with
    // ExecStartPre lines (kept in the file, not run by Paz's agent).
    let text = "[Unit]\nDescription=MyApp\nAfter=docker.service\nRequires=docker.service\n\n[Service]\nTimeoutStartSec=0\nExecStartPre=-/usr/bin/docker kill busybox1\nExecStartPre=-/usr/bin/docker rm busybox1\nExecStart=/usr/bin/docker run --name busybox1 busybox /bin/sh -c \"trap 'exit 0' INT TERM; while true; do echo Hello World; sleep 1; done\"\n\n[X-Fleet]\nConflicts=myapp*.service\nMachineMetadata=region=us-east\n";
    let unit = parse_unit("myapp.service", text).unwrap();
    let Exec::Container(spec) = &unit.exec else {
        panic!("a container")
    };
    assert_eq!(spec.name, "busybox1");
    assert_eq!(spec.image, "busybox");
    assert_eq!(
        spec.command,
        [
            "/bin/sh",
            "-c",
            "trap 'exit 0' INT TERM; while true; do echo Hello World; sleep 1; done"
        ]
    );
    assert_eq!(unit.file.all("Service", "ExecStartPre").len(), 2);
    assert!(unit.placement.conflicts_with("myapp-2.service"));
    assert!(!unit.placement.conflicts_with("other.service"));
    let metadata = [("region".to_string(), "us-east".to_string())]
        .into_iter()
        .collect();
    assert!(unit.placement.metadata_allows(&metadata));
    assert!(!unit.placement.metadata_allows(&Default::default()));
}

#[test]
fn systemd_syntax_comments_continuations_and_repeated_keys() {
    let text = "# a comment\n; another\n[Unit]\nDescription=one \\\n  two \\\n  three\nAfter=a.service\nAfter=b.service\n\n[Service]\nExecStart=/usr/bin/docker run --name x \\\n    -e A=1 \\\n    img\n";
    let file = UnitFile::parse(text).unwrap();
    assert_eq!(file.get("Unit", "Description"), Some("one two three"));
    assert_eq!(file.all("Unit", "After"), ["a.service", "b.service"]);
    expect![[r#"
        [Unit]
        Description=one two three
        After=a.service
        After=b.service

        [Service]
        ExecStart=/usr/bin/docker run --name x -e A=1 img
    "#]]
    .assert_eq(&file.render());
    assert_eq!(
        UnitFile::parse(&file.render()).unwrap(),
        file,
        "the normal form parses back the same"
    );
}

#[test]
fn x_fleet_options_and_the_rules_on_combining_them() {
    let unit = |fleet: &str| {
        let text = format!(
            "[Service]\nExecStart=/usr/bin/docker run --name x img\n\n[X-Fleet]\n{fleet}\n"
        );
        parse_unit("x.service", &text)
    };
    let pinned = unit("MachineID=abc123").unwrap();
    assert_eq!(pinned.placement.machine_id.as_deref(), Some("abc123"));
    let follows = unit("MachineOf=db.service").unwrap();
    assert_eq!(follows.placement.machine_of.as_deref(), Some("db.service"));
    let metadata = unit("MachineMetadata=disk=ssd disk=nvme\nMachineMetadata=region=eu").unwrap();
    let ssd = [("disk", "nvme"), ("region", "eu")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(metadata.placement.metadata_allows(&ssd));
    let global = unit("Global=true\nMachineMetadata=role=edge").unwrap();
    assert!(global.placement.global);

    for (fleet, message) in [
        ("Global=true\nMachineID=abc", "line 6: Global=true cannot be combined with MachineID"),
        ("Global=true\nMachineOf=db.service", "line 6: Global=true cannot be combined with MachineOf"),
        ("Global=true\nConflicts=x*", "line 6: Global=true cannot be combined with Conflicts"),
        ("MachineID=abc\nMachineOf=db.service", "line 6: MachineID and MachineOf cannot be combined: a unit is pinned one way"),
        ("Global=maybe", "line 5: Global `maybe` is not a boolean"),
        ("MachineMetadata=region", "line 5: MachineMetadata `region` is not key=value"),
        ("Conflicts=[", "line 5: Conflicts `[` is not a glob: error parsing glob '[': unclosed character class; missing ']'"),
        ("Replaces=y.service", "line 5: [X-Fleet] Replaces is not supported: use MachineID, MachineOf, MachineMetadata, Conflicts, Global"),
    ] {
        assert_eq!(unit(fleet).unwrap_err().to_string(), message, "{fleet}");
    }
}

#[test]
fn malformed_files_and_unsupported_exec_lines_are_refused_with_their_line() {
    for (text, message) in [
        ("Description=x\n", "line 1: `Description` comes before any [Section]"),
        ("[Unit\nA=b\n", "line 1: `[Unit` is not a [Section] header"),
        ("[Unit]\njust words\n", "line 2: `just words` is not Key=Value"),
        ("[Unit]\nbad key=1\n", "line 2: `bad key` is not a valid key"),
        ("[Service]\nExecStart=/bin/sh -c 'rm -rf /'\n", "line 2: ExecStart `/bin/sh -c 'rm -rf /'` is not supported: Paz runs `/usr/bin/docker run ...` and `/usr/bin/paz sidekick ...`"),
        ("[Service]\nExecStart=/usr/bin/docker run --privileged --name x img\n", "line 2: docker run flag --privileged is not supported: use --name, -p, -e, --env-file, -l, -v, -m, --memory-swap, --cpus, --restart, --rm, -i, -t"),
        ("[Service]\nExecStart=/usr/bin/docker run --name x\n", "line 2: docker run names no image"),
        ("[Service]\nExecStart=/usr/bin/docker run img\n", "line 2: docker run needs --name (the unit's container name)"),
        ("[Service]\nExecStart=/usr/bin/docker run --name \"x img\n", "line 2: a \" quote is not closed"),
        ("[Service]\nExecStart=/usr/bin/docker run --name %q img\n", "line 2: the specifier %q is not supported: use %n %N %p %i %m %H or %%"),
        ("[Service]\nExecStart=/usr/bin/paz sidekick --key /k\n", "line 2: paz sidekick needs --unit"),
        ("[Unit]\nDescription=x\n", "line 0: [Service] has no ExecStart"),
        ("[Service]\nExecStart=a\nExecStart=b\n", "line 2: a Paz unit has exactly one ExecStart"),
        ("[Service]\nExecStart=/usr/bin/docker run --name x img\nTimeoutStopSec=soon\n", "line 3: TimeoutStopSec `soon` is not whole seconds"),
    ] {
        assert_eq!(parse_unit("x.service", text).unwrap_err().to_string(), message, "{text}");
    }
    assert_eq!(
        parse_unit("x", "").unwrap_err().to_string(),
        "line 0: unit name `x` is invalid: use NAME.service"
    );
}

#[test]
fn paz_renders_an_instance_and_its_sidekick() {
    let (app, sidekick) = render_instance(&Instance {
        app: "web".into(),
        release: 7,
        process: "web".into(),
        index: 1,
        image: "127.0.0.1:5000/web@sha256:abc".into(),
        port: 5000,
        env: vec![
            ("GREETING".into(), "hello world".into()),
            ("PORT".into(), "1".into()),
            ("DYNO".into(), "mine.7".into()),
        ],
        command: vec![],
        service_key: "/paz/services/web/7/1".into(),
        health_path: "/up".into(),
        health_timeout: 5,
        health_attempts: 3,
        stop_timeout: 10,
        memory: Some(512 << 20),
        nano_cpus: Some(1_500_000_000),
    })
    .unwrap();
    assert_eq!(app.name, "web-v7-web-1.service");
    expect![[r#"
        [Unit]
        Description=web v7 web instance 1
        After=docker.service

        [Service]
        TimeoutStopSec=10
        ExecStart=/usr/bin/docker run --rm --name web-v7-web-1 -p 5000 -e PORT=5000 -e DYNO=web.1 -e "GREETING=hello world" -l paz.app=web -l paz.release=7 -l paz.unit=web-v7-web-1.service -m 512m --memory-swap 512m --cpus 1.5 127.0.0.1:5000/web@sha256:abc
    "#]]
    .assert_eq(&app.text);
    assert_eq!(sidekick.name, "web-v7-web-1-announce.service");
    expect![[r#"
        [Unit]
        Description=announce web-v7-web-1.service
        BindsTo=web-v7-web-1.service
        After=web-v7-web-1.service

        [Service]
        ExecStart=/usr/bin/paz sidekick --unit web-v7-web-1.service --key /paz/services/web/7/1 --check /up --timeout 5 --attempts 3

        [X-Fleet]
        MachineOf=web-v7-web-1.service
    "#]]
    .assert_eq(&sidekick.text);
    let parsed = parse_unit(&sidekick.name, &sidekick.text).unwrap();
    assert_eq!(parsed.binds_to.as_deref(), Some("web-v7-web-1.service"));
    assert_eq!(
        parsed.placement.machine_of.as_deref(),
        Some("web-v7-web-1.service")
    );
    let Exec::Container(spec) = parse_unit(&app.name, &app.text).unwrap().exec else {
        panic!()
    };
    assert_eq!(
        (
            spec.memory.as_deref(),
            spec.memory_swap.as_deref(),
            spec.cpus.as_deref()
        ),
        (Some("512m"), Some("512m"), Some("1.5")),
        "memory with the same swap limit"
    );
    assert_eq!(
        spec.env,
        [
            ("PORT".to_string(), "5000".to_string()),
            ("DYNO".to_string(), "web.1".to_string()),
            ("GREETING".to_string(), "hello world".to_string())
        ]
    );
    assert_eq!(
        UnitFile::parse(&app.text).unwrap().render(),
        app.text,
        "rendered files round-trip exactly"
    );
}

#[test]
fn an_image_that_would_be_a_docker_flag_or_hold_a_control_character_is_refused() {
    let instance = |image: &str| Instance {
        app: "web".into(),
        release: 1,
        process: "web".into(),
        index: 1,
        image: image.into(),
        port: 5000,
        env: vec![],
        command: vec![],
        service_key: "/paz/services/web/1/1".into(),
        health_path: "/".into(),
        health_timeout: 5,
        health_attempts: 3,
        stop_timeout: 10,
        memory: None,
        nano_cpus: None,
    };
    for bad in [
        "--volume=/:/host:ro",
        "-v",
        "web\nExecStartPre=/bin/sh",
        "web latest",
        "",
    ] {
        let error = render_instance(&instance(bad)).unwrap_err();
        assert!(
            error.contains("is not an image reference"),
            "{bad:?}: {error}"
        );
    }
    assert!(render_instance(&instance("127.0.0.1:5000/web@sha256:ab")).is_ok());
    // A unit file written by hand is held to the same check.
    let error = units::parse_unit(
        "x.service",
        "[Service]\nExecStart=/usr/bin/docker run --name x web\u{7f}\n",
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("is not an image reference"),
        "{error}"
    );
}

#[test]
fn paz_renders_a_one_off_that_is_never_restarted() {
    let one_off = |attached: bool| units::OneOff {
        app: "web".into(),
        release: 7,
        id: "a1b2c3d4".into(),
        image: "127.0.0.1:5000/web@sha256:abc".into(),
        env: vec![("DYNO".into(), "web.1".into()), ("A".into(), "1".into())],
        command: vec!["sh".into(), "-c".into(), "echo $A; exit 3".into()],
        memory: Some(64 << 20),
        nano_cpus: None,
        attached,
        tty: attached,
    };
    let unit = units::render_one_off(&one_off(true)).unwrap();
    assert_eq!(unit.name, "web-v7-run-a1b2c3d4.service");
    expect![[r#"
        [Unit]
        Description=web v7 one-off run a1b2c3d4
        After=docker.service

        [Service]
        TimeoutStopSec=10
        ExecStart=/usr/bin/docker run -i -t --name web-v7-run-a1b2c3d4 -e DYNO=run.a1b2c3d4 -e A=1 -l paz.app=web -l paz.release=7 -l paz.unit=web-v7-run-a1b2c3d4.service -l paz.run=a1b2c3d4 -m 64m --memory-swap 64m --restart no 127.0.0.1:5000/web@sha256:abc sh -c "echo $A; exit 3"
    "#]]
    .assert_eq(&unit.text);
    let Exec::Container(spec) = parse_unit(&unit.name, &unit.text).unwrap().exec else {
        panic!()
    };
    assert_eq!(
        (
            spec.interactive,
            spec.tty,
            spec.restart.as_deref(),
            spec.remove
        ),
        (true, true, Some("no"), false),
        "attached, a TTY, made once, kept until its unit goes"
    );
    assert_eq!(spec.command, one_off(true).command);
    let detached = units::render_one_off(&one_off(false)).unwrap();
    let Exec::Container(spec) = parse_unit(&detached.name, &detached.text).unwrap().exec else {
        panic!()
    };
    assert!(!spec.interactive && !spec.tty);
    let mut bad = one_off(false);
    bad.id = "A-1".into();
    assert!(units::render_one_off(&bad).is_err());
}
