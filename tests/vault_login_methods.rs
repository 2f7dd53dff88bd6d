//! JWT and Kubernetes login against OpenBao. JWTs are signed with a throwaway RSA key made by
//! the `openssl` command; Kubernetes token reviews go to a loopback fake of the Kubernetes
//! TokenReview API.
#![cfg(all(feature = "vault", feature = "testing"))]

mod common;
mod vault_support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::routing::post;
use common::{CANARY, capture_logs};
use megallm_auth::{KeySource, SourceErrorKind, VaultAuth, VaultSource};
use serde_json::{Value, json};
use vault_support::{Admin, assert_no_leak, environment, shared_server, unique};

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Makes an RSA key pair in `dir`. Returns the public key PEM.
fn rsa_key(dir: &Path) -> String {
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .expect("openssl runs");
    assert!(public.status.success());
    String::from_utf8(public.stdout).unwrap()
}

/// Makes a self-signed certificate with the key in `dir`. Returns its PEM. The Kubernetes
/// method requires a CA certificate in its config even for an http:// host, where it goes
/// unused.
fn self_signed_cert(dir: &Path) -> String {
    let output = Command::new("openssl")
        .args(["req", "-x509", "-subj", "/CN=test-ca", "-days", "1", "-key"])
        .arg(dir.join("key.pem"))
        .output()
        .expect("openssl runs");
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// Signs `claims` as an RS256 JWT with the key in `dir`.
fn sign_jwt(dir: &Path, claims: &Value) -> String {
    let header = base64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = base64url(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let input_file = dir.join("input");
    std::fs::write(&input_file, &signing_input).unwrap();
    let signature = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(dir.join("key.pem"))
        .arg(&input_file)
        .output()
        .expect("openssl runs");
    assert!(signature.status.success());
    format!("{signing_input}.{}", base64url(&signature.stdout))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Creates a KV v2 mount with the canary and a policy that may read it. Returns (mount, policy).
async fn readable_secret(admin: &Admin) -> (String, String) {
    let mount = unique("kv2");
    admin.enable_kv(&mount, 2).await;
    admin
        .write(&mount, 2, "megallm", json!({"api_key": CANARY}))
        .await;
    let policy = unique("reader");
    admin
        .policy(
            &policy,
            &format!("path \"{mount}/data/megallm\" {{ capabilities = [\"read\"] }}"),
        )
        .await;
    (mount, policy)
}

#[tokio::test]
async fn jwt_login_reads_secret() {
    let logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    let public_key = rsa_key(dir.path());
    let auth_mount = unique("jwt");
    admin
        .post(&format!("sys/auth/{auth_mount}"), json!({"type": "jwt"}))
        .await;
    admin
        .post(
            &format!("auth/{auth_mount}/config"),
            json!({"jwt_validation_pubkeys": [public_key]}),
        )
        .await;
    admin
        .post(
            &format!("auth/{auth_mount}/role/megallm"),
            json!({
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_audiences": ["megallm"],
                "token_policies": [policy],
            }),
        )
        .await;
    let jwt = sign_jwt(
        dir.path(),
        &json!({"sub": "app", "aud": "megallm", "iat": now(), "nbf": now() - 5, "exp": now() + 600}),
    );
    let jwt_file = dir.path().join("jwt");
    std::fs::write(&jwt_file, &jwt).unwrap();

    let source = VaultSource::builder(&mount, "megallm")
        .auth(VaultAuth::jwt("megallm", &jwt_file).with_mount(&auth_mount))
        .environment(environment(&admin.address, &[]))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert!(logs.contents().contains("JWT login"), "{}", logs.contents());
    assert_no_leak(None, &source, &[&jwt, &admin.token]);
}

#[tokio::test]
async fn jwt_wrong_audience_is_denied() {
    let _logs = capture_logs();
    let admin = shared_server();
    let dir = tempfile::tempdir().unwrap();
    let public_key = rsa_key(dir.path());
    let auth_mount = unique("jwt");
    admin
        .post(&format!("sys/auth/{auth_mount}"), json!({"type": "jwt"}))
        .await;
    admin
        .post(
            &format!("auth/{auth_mount}/config"),
            json!({"jwt_validation_pubkeys": [public_key]}),
        )
        .await;
    admin
        .post(
            &format!("auth/{auth_mount}/role/megallm"),
            json!({"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["megallm"]}),
        )
        .await;
    let jwt = sign_jwt(
        dir.path(),
        &json!({"sub": "app", "aud": "other", "iat": now(), "exp": now() + 600}),
    );
    let jwt_file = dir.path().join("jwt");
    std::fs::write(&jwt_file, &jwt).unwrap();

    let source = VaultSource::builder("secret", "megallm")
        .auth(VaultAuth::jwt("megallm", &jwt_file).with_mount(&auth_mount))
        .environment(environment(&admin.address, &[]))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Denied);
    assert!(
        error.message().contains("rejected the JWT login"),
        "{error}"
    );
    assert!(
        error.message().contains(&jwt_file.display().to_string()),
        "{error}"
    );
    assert_no_leak(Some(&error), &source, &[&jwt, &admin.token]);
}

#[tokio::test]
async fn missing_jwt_file_is_misconfigured() {
    let admin = shared_server();
    let source = VaultSource::builder("secret", "megallm")
        .auth(VaultAuth::jwt("megallm", "/nonexistent/jwt"))
        .environment(environment(&admin.address, &[]))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    assert!(
        error.message().contains("/nonexistent/jwt is missing"),
        "{error}"
    );
}

/// Starts a loopback fake of the Kubernetes TokenReview API that authenticates every token as
/// `system:serviceaccount:default:megallm` and records the reviewed tokens.
async fn fake_token_review() -> (String, Arc<Mutex<Vec<String>>>) {
    let reviewed = Arc::new(Mutex::new(Vec::new()));
    let recorder = reviewed.clone();
    let app = axum::Router::new().route(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        post(move |Json(review): Json<Value>| {
            let recorder = recorder.clone();
            async move {
                let token = review["spec"]["token"].as_str().unwrap_or("").to_owned();
                recorder.lock().unwrap().push(token);
                Json(json!({
                    "kind": "TokenReview",
                    "apiVersion": "authentication.k8s.io/v1",
                    "status": {
                        "authenticated": true,
                        "user": {
                            "username": "system:serviceaccount:default:megallm",
                            "uid": "4c4f1d3e-0000-4000-8000-000000000001",
                            "groups": ["system:serviceaccounts"]
                        }
                    }
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (address, reviewed)
}

#[tokio::test]
async fn kubernetes_login_reads_secret() {
    let _logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let (kubernetes_host, reviewed) = fake_token_review().await;
    let dir = tempfile::tempdir().unwrap();
    rsa_key(dir.path());
    let ca_cert = self_signed_cert(dir.path());
    let auth_mount = unique("kubernetes");
    admin
        .post(
            &format!("sys/auth/{auth_mount}"),
            json!({"type": "kubernetes"}),
        )
        .await;
    admin
        .post(
            &format!("auth/{auth_mount}/config"),
            json!({
                "kubernetes_host": kubernetes_host,
                "kubernetes_ca_cert": ca_cert,
                "disable_local_ca_jwt": true,
            }),
        )
        .await;
    admin
        .post(
            &format!("auth/{auth_mount}/role/megallm"),
            json!({
                "bound_service_account_names": ["megallm"],
                "bound_service_account_namespaces": ["default"],
                "token_policies": [policy],
            }),
        )
        .await;
    let service_account_token = sign_jwt(
        dir.path(),
        &json!({
            "iss": "kubernetes/serviceaccount",
            "sub": "system:serviceaccount:default:megallm",
            "kubernetes.io/serviceaccount/namespace": "default",
            "kubernetes.io/serviceaccount/service-account.name": "megallm",
            "kubernetes.io/serviceaccount/service-account.uid": "4c4f1d3e-0000-4000-8000-000000000001",
            "iat": now(),
            "exp": now() + 600,
        }),
    );
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{service_account_token}\n")).unwrap();

    let auth = VaultAuth::kubernetes("megallm")
        .with_mount(&auth_mount)
        .with_token_file(&token_file);
    let source = VaultSource::builder(&mount, "megallm")
        .auth(auth)
        .environment(environment(&admin.address, &[]))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(
        reviewed.lock().unwrap().last().map(String::as_str),
        Some(service_account_token.as_str())
    );
    assert_no_leak(None, &source, &[&service_account_token, &admin.token]);
}

#[test]
fn kubernetes_default_token_path() {
    let auth = VaultAuth::kubernetes("megallm");
    let VaultAuth::Kubernetes {
        mount, token_file, ..
    } = auth
    else {
        panic!("not a Kubernetes login");
    };
    assert_eq!(mount, "kubernetes");
    assert_eq!(
        token_file,
        Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token")
    );
}
