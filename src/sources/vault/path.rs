//! Normalisation of the secret path a user configured, which is often pasted from the CLI, a
//! policy or an API URL instead of being written relative to the mount.

use super::KvVersion;

/// A mount and secret path after normalisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SecretPath {
    /// Mount of the KV engine, without slashes, such as `secret`.
    pub mount: String,
    /// Path of the secret inside the mount, without the KV v2 `data/` prefix.
    pub path: String,
    /// KV version that the path form implies: `data/...` and `/v1/<mount>/data/...` are KV v2.
    pub implied_version: Option<KvVersion>,
}

/// Normalises `mount` and `path`.
///
/// Accepted forms, for mount `secret`: `megallm`, `data/megallm` and `secret/data/megallm`
/// (KV v2 API and policy paths), `/v1/secret/data/megallm` and `/v1/secret/megallm` (API URLs).
/// With `kv_version = 1` a `data/` prefix is kept, because a KV v1 secret can be named that way.
///
/// Returns the reason and the fix when the path is ambiguous or invalid.
pub(crate) fn normalise(
    mount: &str,
    path: &str,
    configured: Option<KvVersion>,
) -> Result<SecretPath, String> {
    let mount = mount.trim().trim_matches('/');
    if mount.is_empty() {
        return Err("the Vault mount is empty; set mount, such as mount = \"secret\"".to_owned());
    }
    check_segments("mount", mount)?;

    let original = path.trim();
    let mut rest = original.trim_matches('/');
    let mut implied_version = None;

    if let Some(api_path) = rest.strip_prefix("v1/") {
        let Some(inside) = api_path
            .strip_prefix(mount)
            .and_then(|p| p.strip_prefix('/'))
        else {
            return Err(format!(
                "the path {original:?} is an API URL for another mount than {mount:?}; set \
                 mount to the first segment after /v1/ and path to the rest"
            ));
        };
        rest = inside;
        if let Some(inside) = rest.strip_prefix("data/") {
            if configured == Some(KvVersion::V1) {
                return Err(format!(
                    "the path {original:?} is a KV v2 API URL but kv_version = 1; set \
                     kv_version = 2, or write the path of the KV v1 secret"
                ));
            }
            rest = inside;
            implied_version = Some(KvVersion::V2);
        }
    } else if let Some(inside) = rest
        .strip_prefix(mount)
        .and_then(|p| p.strip_prefix("/data/"))
    {
        rest = inside;
        implied_version = Some(KvVersion::V2);
    } else if rest.starts_with(&format!("{mount}/")) {
        let inside = &rest[mount.len() + 1..];
        return Err(format!(
            "the path {original:?} starts with the mount name {mount:?}; the mount is set \
             separately, so write path = {inside:?}"
        ));
    } else if configured != Some(KvVersion::V1)
        && let Some(inside) = rest.strip_prefix("data/")
    {
        rest = inside;
        implied_version = Some(KvVersion::V2);
    }

    if let Some(inside) = rest.strip_prefix("metadata/") {
        return Err(format!(
            "the path {original:?} names KV v2 metadata, not a secret; write path = {inside:?}"
        ));
    }
    if rest.is_empty() {
        return Err(format!(
            "the Vault secret path {original:?} is empty; set path, such as path = \"megallm\""
        ));
    }
    check_segments("path", rest)?;

    Ok(SecretPath {
        mount: mount.to_owned(),
        path: rest.to_owned(),
        implied_version,
    })
}

/// Rejects empty, `.` and `..` segments and characters that would change the request URL.
fn check_segments(what: &str, value: &str) -> Result<(), String> {
    if value.contains(['?', '#', '%', '\\']) || value.chars().any(char::is_control) {
        return Err(format!(
            "the Vault {what} {value:?} contains a character that is not allowed in a secret \
             path (?, #, %, \\ or a control character)"
        ));
    }
    for segment in value.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!(
                "the Vault {what} {value:?} contains an empty, `.` or `..` segment; write it \
                 as plain names separated by single slashes"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(mount: &str, path: &str, configured: Option<KvVersion>) -> SecretPath {
        normalise(mount, path, configured).expect("path is accepted")
    }

    #[test]
    fn plain_path_is_kept() {
        let path = ok("secret", "megallm", None);
        assert_eq!(path.mount, "secret");
        assert_eq!(path.path, "megallm");
        assert_eq!(path.implied_version, None);
    }

    #[test]
    fn nested_path_is_kept() {
        assert_eq!(
            ok("secret", "team/prod/megallm", None).path,
            "team/prod/megallm"
        );
    }

    #[test]
    fn slashes_around_mount_and_path_are_trimmed() {
        let path = ok("/secret/", "/megallm/", None);
        assert_eq!(path.mount, "secret");
        assert_eq!(path.path, "megallm");
    }

    #[test]
    fn data_prefix_implies_kv2() {
        let path = ok("secret", "data/megallm", None);
        assert_eq!(path.path, "megallm");
        assert_eq!(path.implied_version, Some(KvVersion::V2));
    }

    #[test]
    fn data_prefix_kept_for_kv1() {
        let path = ok("kv", "data/megallm", Some(KvVersion::V1));
        assert_eq!(path.path, "data/megallm");
        assert_eq!(path.implied_version, None);
    }

    #[test]
    fn policy_path_is_normalised() {
        let path = ok("secret", "secret/data/megallm", None);
        assert_eq!(path.path, "megallm");
        assert_eq!(path.implied_version, Some(KvVersion::V2));
    }

    #[test]
    fn api_url_kv2_is_normalised() {
        let path = ok("secret", "/v1/secret/data/megallm", None);
        assert_eq!(path.path, "megallm");
        assert_eq!(path.implied_version, Some(KvVersion::V2));
    }

    #[test]
    fn api_url_kv1_is_normalised() {
        let path = ok("kv", "/v1/kv/megallm", Some(KvVersion::V1));
        assert_eq!(path.path, "megallm");
        assert_eq!(path.implied_version, None);
    }

    #[test]
    fn api_url_kv2_with_kv1_is_rejected() {
        let message = normalise("secret", "/v1/secret/data/megallm", Some(KvVersion::V1))
            .expect_err("conflicting version");
        assert!(message.contains("kv_version = 2"), "{message}");
    }

    #[test]
    fn api_url_other_mount_is_rejected() {
        let message = normalise("secret", "/v1/kv/data/megallm", None).expect_err("other mount");
        assert!(message.contains("another mount"), "{message}");
    }

    #[test]
    fn mount_prefix_is_rejected_with_hint() {
        let message = normalise("secret", "secret/megallm", None).expect_err("ambiguous");
        assert!(message.contains("write path = \"megallm\""), "{message}");
    }

    #[test]
    fn metadata_prefix_is_rejected_with_hint() {
        let message = normalise("secret", "metadata/megallm", None).expect_err("metadata");
        assert!(message.contains("write path = \"megallm\""), "{message}");
    }

    #[test]
    fn bad_paths_are_rejected() {
        for path in [
            "", "/", "a//b", "a/../b", "./a", "a?b", "a#b", "a%2fb", "a\nb",
        ] {
            assert!(
                normalise("secret", path, None).is_err(),
                "accepted {path:?}"
            );
        }
    }

    #[test]
    fn empty_mount_is_rejected() {
        let message = normalise(" / ", "megallm", None).expect_err("empty mount");
        assert!(message.contains("mount is empty"), "{message}");
    }
}
