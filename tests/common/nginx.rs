//! nginx with Debian's RTMP module: the third-party RTMP server outputs are
//! judged against.

use std::fs::File;
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

use super::net::free_tcp_port;

const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
pub const INSTALL_HINT: &str = "run scripts/install-deps.sh (it installs nginx and libnginx-mod-rtmp)";


/// nginx with the RTMP module, one `live` application, on a free port of
/// loopback; its config, logs and pid live in a temp dir. Killed on drop.
pub struct Nginx {
    pub dir: TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Nginx {
    pub fn start() -> Nginx {
        assert!(
            Path::new(NGINX_RTMP_MODULE).exists(),
            "{NGINX_RTMP_MODULE} is missing: {INSTALL_HINT}"
        );
        let dir = TempDir::new().unwrap();
        let port = free_tcp_port().expect("a free TCP port");
        let config = format!(
            "load_module {NGINX_RTMP_MODULE};\n\
             daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             error_log {dir}/error.log info;\n\
             pid {dir}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n",
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let mut nginx = Nginx { dir, port, child: None };
        nginx.launch();
        nginx
    }

    pub fn launch(&mut self) {
        let dir = self.dir.path();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nginx ({e}): {INSTALL_HINT}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 5 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self, app: &str, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{key}", self.port)
    }

    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}
