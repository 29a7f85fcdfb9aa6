//! nginx from one of the project's templates (`infra/cdn`, `infra/ha`),
//! filled in, checked with `nginx -t` and run in the foreground for one
//! test; stopped with SIGTERM when dropped, so the master takes its
//! workers with it.

use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// `template` (a path in the repository) with `@@PREFIX@@` set to a fresh
/// directory under `dir` and every `(placeholder, value)` replaced.
pub fn start(template: &str, dir: &Path, values: &[(&str, &str)]) -> Nginx {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix).unwrap();
    let mut conf = std::fs::read_to_string(root.join(template))
        .unwrap()
        .replace("@@PREFIX@@", prefix.to_str().unwrap());
    for (placeholder, value) in values {
        conf = conf.replace(placeholder, value);
    }
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let check = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .output()
        .expect("nginx (installed by infra/dev/setup)");
    assert!(
        check.status.success(),
        "{template}: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    Nginx(
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (installed by infra/dev/setup)"),
    )
}
