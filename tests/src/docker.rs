//! The real Docker Engine for tests: a connection, the busybox base image that
//! test apps are built on, and a guard that removes what a test made.

use std::collections::HashMap;
use std::path::Path;

use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use bollard::Docker;
use futures::TryStreamExt;
use tokio::sync::OnceCell;

/// The base image of test apps and of `examples/`: busybox from the host's
/// `busybox-static`. `scripts/base-image` makes the same image for users.
pub const BUSYBOX_IMAGE: &str = "paz/busybox:latest";

/// Marks the base image with the version of the recipe below.
const BUSYBOX_LABEL: &str = "paz.busybox";
const BUSYBOX_VERSION: &str = "1";

/// The label that marks what a test made: `paz-test=<test id>`.
pub const TEST_LABEL: &str = "paz-test";

/// Connects to the local Docker Engine, or fails the test saying how to start it.
pub async fn docker() -> Docker {
    let not_running = |error: &dyn std::fmt::Display| -> ! {
        panic!("Docker is not running: run scripts/test, which starts it ({error})")
    };
    let docker = Docker::connect_with_local_defaults().unwrap_or_else(|e| not_running(&e));
    // Debian's engine speaks an older API than bollard's default.
    let docker = docker
        .negotiate_version()
        .await
        .unwrap_or_else(|e| not_running(&e));
    docker.ping().await.unwrap_or_else(|e| not_running(&e));
    docker
}

/// Makes [`BUSYBOX_IMAGE`] once per machine (`docker import` of a rootfs holding
/// `/bin/busybox` and its applet links) and returns its name.
pub async fn busybox_image(docker: &Docker) -> &'static str {
    static MADE: OnceCell<()> = OnceCell::const_new();
    MADE.get_or_init(|| async {
        // An image made by an older harness (or by hand) is replaced.
        if let Ok(image) = docker.inspect_image(BUSYBOX_IMAGE).await {
            let labels = image
                .config
                .and_then(|config| config.labels)
                .unwrap_or_default();
            if labels.get(BUSYBOX_LABEL).map(String::as_str) == Some(BUSYBOX_VERSION) {
                return;
            }
        }
        let rootfs = busybox_rootfs(Path::new("/bin/busybox"));
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo("paz/busybox")
            .tag("latest")
            .changes(vec![
                "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                "CMD [\"sh\"]".to_string(),
                format!("LABEL {BUSYBOX_LABEL}={BUSYBOX_VERSION}"),
            ])
            .build();
        docker
            .create_image(Some(options), Some(bollard::body_full(rootfs.into())), None)
            .try_collect::<Vec<_>>()
            .await
            .unwrap_or_else(|error| panic!("cannot import {BUSYBOX_IMAGE}: {error}"));
    })
    .await;
    BUSYBOX_IMAGE
}

/// A tar of a root filesystem with busybox and a link for each of its applets.
fn busybox_rootfs(busybox: &Path) -> Vec<u8> {
    let missing = || -> ! {
        panic!(
            "{} is missing: run scripts/test, which installs busybox-static",
            busybox.display()
        )
    };
    let applets = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .unwrap_or_else(|_| missing());
    let binary = std::fs::read(busybox).unwrap_or_else(|_| missing());
    let mut archive = tar::Builder::new(Vec::new());
    for dir in ["bin/", "tmp/", "etc/", "usr/", "usr/bin/"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "tmp/" { 0o1777 } else { 0o755 });
        header.set_size(0);
        archive
            .append_data(&mut header, dir, std::io::empty())
            .expect("tar in memory");
    }
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_size(binary.len() as u64);
    archive
        .append_data(&mut header, "bin/busybox", binary.as_slice())
        .expect("tar in memory");
    for applet in String::from_utf8_lossy(&applets.stdout).split_whitespace() {
        if applet == "busybox" {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        archive
            .append_link(&mut header, format!("bin/{applet}"), "busybox")
            .expect("tar in memory");
    }
    archive.into_inner().expect("tar in memory")
}

/// Removes, when dropped (also on panic), every container labelled with this
/// guard's label and every image given to [`DockerCleanup::track_image`].
#[derive(Debug)]
pub struct DockerCleanup {
    id: String,
    images: Vec<String>,
    /// Other labels whose containers go too (e.g. a `paz up` agent's `paz.machine=ID`).
    labels: Vec<String>,
}

impl DockerCleanup {
    /// `test_name` makes the label readable in `docker ps`.
    pub fn new(test_name: &str) -> DockerCleanup {
        DockerCleanup {
            id: format!("{test_name}-{}", std::process::id()),
            images: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// The labels to put on every container the test makes.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([(TEST_LABEL.to_string(), self.id.clone())])
    }

    /// The `docker` CLI form of the label, for `docker run --label`.
    pub fn label_arg(&self) -> String {
        format!("{TEST_LABEL}={}", self.id)
    }

    /// Removes `image` when the guard drops.
    pub fn track_image(&mut self, image: &str) {
        self.images.push(image.to_string());
    }

    /// Removes the containers labelled `label` (`KEY=VALUE`) when the guard drops.
    pub fn track_label(&mut self, label: &str) {
        self.labels.push(label.to_string());
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let mut labels = std::mem::take(&mut self.labels);
        labels.push(self.label_arg());
        let images = std::mem::take(&mut self.images);
        // Drop may run inside a test's runtime, which cannot be blocked on; use a
        // thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                let Ok(docker) = Docker::connect_with_local_defaults() else {
                    return;
                };
                let Ok(docker) = docker.negotiate_version().await else {
                    return;
                };
                for label in &labels {
                    let filters = HashMap::from([("label", vec![label.as_str()])]);
                    let list = ListContainersOptionsBuilder::new()
                        .all(true)
                        .filters(&filters)
                        .build();
                    for container in docker.list_containers(Some(list)).await.unwrap_or_default() {
                        let Some(id) = container.id else { continue };
                        let remove = RemoveContainerOptionsBuilder::new()
                            .force(true)
                            .v(true)
                            .build();
                        let _ = docker.remove_container(&id, Some(remove)).await;
                    }
                }
                for image in images {
                    let remove = RemoveImageOptionsBuilder::new().force(true).build();
                    let _ = docker.remove_image(&image, Some(remove), None).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
