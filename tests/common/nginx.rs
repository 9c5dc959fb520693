//! nginx with Debian's RTMP module: the third-party RTMP server outputs are
//! judged against. Optionally with TLS fronts (the stream module terminating
//! TLS and proxying to the RTMP port), the way RTMPS ingest is usually built.

use std::fs::File;
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

use super::net::free_tcp_port;
use super::pki::CertificateFiles;

const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
pub const INSTALL_HINT: &str =
    "run scripts/install-deps.sh (it installs nginx, libnginx-mod-rtmp and libnginx-mod-stream)";

/// nginx with the RTMP module, one `live` application, on a free port of
/// loopback; its config, logs and pid live in a temp dir. Killed on drop.
pub struct Nginx {
    pub dir: TempDir,
    pub port: u16,
    /// One TLS port per front given to [`Nginx::start_with_tls_fronts`], in order.
    pub tls_ports: Vec<u16>,
    child: Option<Child>,
}

/// The stream module's access log: one line per finished TLS session,
/// `{port} {status}`, to count the connections a front received.
const TLS_ACCESS_LOG: &str = "tls-access.log";

impl Nginx {
    pub fn start() -> Nginx {
        Nginx::start_with_tls_fronts(&[])
    }

    /// Also a TLS front per certificate: nginx's stream module on a free port,
    /// presenting that certificate and proxying the decrypted bytes to the
    /// plain RTMP port.
    pub fn start_with_tls_fronts(fronts: &[CertificateFiles]) -> Nginx {
        let mut modules = vec![NGINX_RTMP_MODULE];
        if !fronts.is_empty() {
            modules.push(NGINX_STREAM_MODULE);
        }
        for module in modules {
            assert!(Path::new(module).exists(), "{module} is missing: {INSTALL_HINT}");
        }
        let dir = TempDir::new().unwrap();
        let port = free_tcp_port().expect("a free TCP port");
        let tls_ports: Vec<u16> = fronts.iter().map(|_| free_tcp_port().expect("a free TCP port")).collect();
        let mut config = format!(
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
        if !fronts.is_empty() {
            config = format!("load_module {NGINX_STREAM_MODULE};\n{config}");
            config.push_str("stream {\n    log_format sessions '$server_port $status';\n");
            config.push_str(&format!("    access_log {}/{TLS_ACCESS_LOG} sessions;\n", dir.path().display()));
            for (front, tls_port) in fronts.iter().zip(&tls_ports) {
                config.push_str(&format!(
                    "    server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {}; ssl_certificate_key {}; \
                     proxy_pass 127.0.0.1:{port}; }}\n",
                    front.cert.display(),
                    front.key.display()
                ));
            }
            config.push_str("}\n");
        }
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let mut nginx = Nginx { dir, port, tls_ports, child: None };
        nginx.launch();
        nginx
    }

    /// The `rtmps://` URL of TLS front `front`, dialled as `host`.
    pub fn rtmps_url(&self, front: usize, host: &str, app: &str, key: &str) -> String {
        format!("rtmps://{host}:{}/{app}/{key}", self.tls_ports[front])
    }

    /// TLS sessions front `front` has seen end.
    pub fn tls_sessions(&self, front: usize) -> usize {
        let port = self.tls_ports[front].to_string();
        std::fs::read_to_string(self.dir.path().join(TLS_ACCESS_LOG))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.split_whitespace().next() == Some(port.as_str()))
            .count()
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
        // nginx binds every listening socket (the TLS fronts too) before it
        // accepts on any; probing a front would count as one of its sessions.
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
