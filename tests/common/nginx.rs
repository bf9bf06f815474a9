//! nginx from Debian as the test cluster's load balancer, running the deployed config.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// nginx from Debian, in the foreground, on its own prefix under a temp dir, running the
/// deployed balancer config (`deploy/nginx/profile-vault.conf`, what docker-compose mounts)
/// with this test's daemons as its upstream servers and a loopback port.
pub struct Nginx {
    child: Child,
}

impl Nginx {
    pub fn start(dir: &Path, port: u16, upstreams: &[&str]) -> Nginx {
        let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| Command::new(b).arg("-v").output().is_ok())
            .expect("nginx is installed (.ci/install-deps installs it from Debian)");
        let deployed = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/profile-vault.conf"),
        )
        .unwrap();
        // The deployed upstream servers (compose service names) become this test's daemons.
        let mut site = String::new();
        let mut replaced = false;
        for line in deployed.lines() {
            let t = line.trim_start();
            if t.starts_with("server profile-vault-") {
                if !replaced {
                    for u in upstreams {
                        site.push_str(&format!("    server {u} max_fails=0;\n"));
                    }
                    replaced = true;
                }
            } else if t == "listen 8080;" {
                site.push_str(&format!("    listen 127.0.0.1:{port};\n"));
            } else {
                site.push_str(line);
                site.push('\n');
            }
        }
        assert!(
            replaced && site.contains(&format!("listen 127.0.0.1:{port};")),
            "deploy/nginx/profile-vault.conf has the upstream servers and `listen 8080;`"
        );
        let d = dir.display();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::write(dir.join("site.conf"), site).unwrap();
        let conf = format!(
            r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  include {d}/site.conf;
}}
"#
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Nginx { child };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
