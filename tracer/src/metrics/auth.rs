//! HTTP basic authentication against the web config's bcrypt hashes. A bcrypt check costs tens
//! of milliseconds by design; as in exporter-toolkit, a pair that passed is remembered (as a
//! SHA-less fingerprint is not needed: the pair is kept only in this process's memory), so a
//! scraper pays it once, not on every scrape.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use base64::{Engine, engine::general_purpose::STANDARD};

/// The users of the web config and the credentials already verified.
#[derive(Clone, Default)]
pub struct Users {
    hashes: Arc<BTreeMap<String, String>>,
    passed: Arc<Mutex<HashMap<String, String>>>,
}

/// The user and password of an `Authorization: Basic ...` header value.
pub fn credentials(header: &str) -> Option<(String, String)> {
    let (scheme, b64) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

impl Users {
    pub fn new(hashes: BTreeMap<String, String>) -> Self {
        Users {
            hashes: Arc::new(hashes),
            passed: Arc::default(),
        }
    }

    /// No users configured: every request is let in.
    pub fn open(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether the `Authorization` header (if any) names a user with the right password.
    /// Blocking (bcrypt): call it off the async reactor.
    pub fn allows(&self, header: Option<&str>) -> bool {
        if self.open() {
            return true;
        }
        let Some((user, pass)) = header.and_then(credentials) else {
            return false;
        };
        let Some(hash) = self.hashes.get(&user) else {
            return false;
        };
        let cache = |g: &HashMap<String, String>| g.get(&user).is_some_and(|p| *p == pass);
        if cache(&self.passed.lock().unwrap_or_else(|p| p.into_inner())) {
            return true;
        }
        let ok = bcrypt::verify(&pass, hash).unwrap_or(false);
        if ok {
            self.passed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(user, pass);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        // "alice:s3cr:et" in base64: the password may hold a colon.
        let h = format!("Basic {}", STANDARD.encode("alice:s3cr:et"));
        assert_eq!(credentials(&h), Some(("alice".into(), "s3cr:et".into())));
        assert_eq!(credentials("Bearer abc"), None);
        assert_eq!(credentials("Basic !!!"), None);
        assert_eq!(
            credentials(&format!("basic {}", STANDARD.encode("nocolon"))),
            None
        );
    }

    #[test]
    fn only_the_right_password_of_a_known_user_passes() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let users = Users::new([("alice".to_string(), hash)].into());
        let basic = |u: &str, p: &str| format!("Basic {}", STANDARD.encode(format!("{u}:{p}")));
        assert!(!users.allows(None));
        assert!(!users.allows(Some(&basic("alice", "wrong"))));
        assert!(!users.allows(Some(&basic("bob", "pw"))));
        assert!(users.allows(Some(&basic("alice", "pw"))));
        // Remembered, and a wrong one after a right one still fails.
        assert!(users.allows(Some(&basic("alice", "pw"))));
        assert!(!users.allows(Some(&basic("alice", "pw2"))));
        assert!(Users::default().allows(None));
    }
}
