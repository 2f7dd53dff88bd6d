//! Setup helpers for the Vault tests: the OpenBao dev server started by `scripts/test`, a root
//! admin client over the HTTP API, unique names, and private servers a test may seal or stop.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use megallm_auth::{Environment, KeySource, SourceError};
use serde_json::{Value, json};

use crate::common::{assert_no_canary, capture_logs};

/// Address and root token of the shared dev server.
pub fn shared_server() -> Admin {
    let address = required_var("MEGALLM_TEST_VAULT_ADDR");
    let token = required_var("MEGALLM_TEST_VAULT_ROOT_TOKEN");
    Admin::new(address, token)
}

fn required_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the Vault tests with scripts/test, which starts OpenBao")
    })
}

/// Returns `prefix` with a suffix unique to this process and call.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A root client for setup over Vault's HTTP API.
#[derive(Clone)]
pub struct Admin {
    pub address: String,
    pub token: String,
    pub namespace: Option<String>,
    http: reqwest::Client,
}

impl Admin {
    pub fn new(address: String, token: String) -> Admin {
        Admin {
            address,
            token,
            namespace: None,
            http: reqwest::Client::new(),
        }
    }

    /// Returns the same admin acting in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Admin {
        Admin {
            namespace: Some(namespace.to_owned()),
            ..self.clone()
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        // A new KV v2 mount rejects writes with 400 for a moment while it upgrades its storage.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}/v1/{path}", self.address))
                .header("X-Vault-Token", &self.token);
            if let Some(namespace) = &self.namespace {
                request = request.header("X-Vault-Namespace", namespace);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.expect("setup request reaches Vault");
            let status = response.status();
            let text = response.text().await.unwrap();

            let upgrading = status == reqwest::StatusCode::BAD_REQUEST
                && text.contains("Upgrading from non-versioned to versioned data");
            if upgrading && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            assert!(
                status.is_success(),
                "setup {method} {path} failed with {status}: {text}"
            );
            return if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            };
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Value {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// Enables a KV engine of `version` at `mount`.
    pub async fn enable_kv(&self, mount: &str, version: u8) {
        self.post(
            &format!("sys/mounts/{mount}"),
            json!({"type": "kv", "options": {"version": version.to_string()}}),
        )
        .await;
    }

    /// Writes `data` to `path` in a KV mount of `version`. Returns the KV v2 version number.
    pub async fn write(&self, mount: &str, version: u8, path: &str, data: Value) -> Option<u64> {
        if version == 2 {
            let answer = self
                .post(&format!("{mount}/data/{path}"), json!({"data": data}))
                .await;
            answer["data"]["version"].as_u64()
        } else {
            self.post(&format!("{mount}/{path}"), data).await;
            None
        }
    }

    /// Writes an ACL policy.
    pub async fn policy(&self, name: &str, hcl: &str) {
        self.post(&format!("sys/policies/acl/{name}"), json!({"policy": hcl}))
            .await;
    }

    /// Creates a token with `policies`; `ttl` such as "1h".
    pub async fn token(&self, policies: &[&str], ttl: &str, renewable: bool) -> String {
        let answer = self
            .post(
                "auth/token/create",
                json!({"policies": policies, "ttl": ttl, "renewable": renewable}),
            )
            .await;
        answer["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    /// Enables AppRole at `mount` with a role; returns the role id and a secret id.
    pub async fn approle(&self, mount: &str, role: &str, options: Value) -> (String, String) {
        self.post(&format!("sys/auth/{mount}"), json!({"type": "approle"}))
            .await;
        self.post(&format!("auth/{mount}/role/{role}"), options)
            .await;
        let role_id =
            self.get(&format!("auth/{mount}/role/{role}/role-id")).await["data"]["role_id"]
                .as_str()
                .unwrap()
                .to_owned();
        let secret_id = self
            .post(&format!("auth/{mount}/role/{role}/secret-id"), json!({}))
            .await["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
        (role_id, secret_id)
    }
}

/// Returns an environment with only `VAULT_ADDR` and the given variables.
pub fn environment(address: &str, extra: &[(&str, &str)]) -> Environment {
    let mut pairs = vec![("VAULT_ADDR".to_owned(), address.to_owned())];
    pairs.extend(
        extra
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    );
    Environment::from_pairs(pairs)
}

/// Checks an error's Display and Debug, the source's Debug and the captured logs for canaries
/// and for each of `secrets` (tokens, secret ids).
#[track_caller]
pub fn assert_no_leak(error: Option<&SourceError>, source: &dyn KeySource, secrets: &[&str]) {
    let mut outputs = vec![
        ("source Debug", format!("{source:?}")),
        ("captured logs", capture_logs().contents()),
    ];
    if let Some(error) = error {
        outputs.push(("error Display", error.to_string()));
        outputs.push(("error Debug", format!("{error:?}")));
    }
    for (what, text) in &outputs {
        assert_no_canary(what, text);
        for secret in secrets {
            assert!(!text.contains(secret), "{what} contains a secret: {text}");
        }
        assert!(
            !contains_service_token(text),
            "{what} contains something shaped like a Vault token: {text}"
        );
    }
}

/// Returns whether `text` contains an OpenBao or Vault service token (`s.` or `hvs.` and at least
/// 24 letters and digits), such as one issued by a login whose response the test never reads.
pub fn contains_service_token(text: &str) -> bool {
    text.match_indices("s.").any(|(start, _)| {
        let preceded_by_word = text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() && c != 'v');
        let body = &text[start + 2..];
        let run = body.chars().take_while(char::is_ascii_alphanumeric).count();
        !preceded_by_word && run >= 24
    })
}

/// A dev server of its own on a free loopback port, killed by PID on drop.
pub struct PrivateServer {
    pub admin: Admin,
    child: Child,
}

impl PrivateServer {
    /// Starts a plain-HTTP dev server.
    pub async fn start() -> PrivateServer {
        PrivateServer::launch(None).await
    }

    /// Starts a dev server with TLS; OpenBao writes `vault-ca.pem`, `vault-cert.pem` and
    /// `vault-key.pem` into `cert_dir`.
    pub async fn start_tls(cert_dir: &std::path::Path) -> PrivateServer {
        PrivateServer::launch(Some(cert_dir)).await
    }

    async fn launch(cert_dir: Option<&std::path::Path>) -> PrivateServer {
        let binary = required_var("MEGALLM_TEST_BAO_BIN");
        let port = free_port();
        let token = unique("root");
        let mut args = vec![
            "server".to_owned(),
            "-dev".to_owned(),
            format!("-dev-listen-address=127.0.0.1:{port}"),
            format!("-dev-root-token-id={token}"),
            "-dev-no-store-token".to_owned(),
        ];
        if let Some(dir) = cert_dir {
            args.push("-dev-tls".to_owned());
            args.push(format!("-dev-tls-cert-dir={}", dir.display()));
        }
        let child = Command::new(binary)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bao starts");
        let scheme = if cert_dir.is_some() { "https" } else { "http" };
        let address = format!("{scheme}://127.0.0.1:{port}");

        let deadline = Instant::now() + Duration::from_secs(30);
        let http = loop {
            let http = match cert_dir {
                None => Some(reqwest::Client::new()),
                Some(dir) => std::fs::read(dir.join("vault-ca.pem")).ok().map(|pem| {
                    let ca = reqwest::Certificate::from_pem(&pem).unwrap();
                    reqwest::Client::builder()
                        .add_root_certificate(ca)
                        .build()
                        .unwrap()
                }),
            };
            if let Some(http) = http {
                let health = http.get(format!("{address}/v1/sys/health")).send().await;
                if health.is_ok_and(|response| response.status().is_success()) {
                    break http;
                }
            }
            assert!(Instant::now() < deadline, "private OpenBao did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let admin = Admin {
            address,
            token,
            namespace: None,
            http,
        };
        PrivateServer { admin, child }
    }

    /// Seals the server.
    pub async fn seal(&self) {
        self.admin
            .send(reqwest::Method::PUT, "sys/seal", None)
            .await;
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Returns a port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
