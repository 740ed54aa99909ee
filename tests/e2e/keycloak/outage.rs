//! Keycloak stopped while berth runs: local users are unaffected, federated
//! users get 503 (not 401), and everything works again once Keycloak is back.

use std::thread;
use std::time::{Duration, Instant};

use super::fixture::{self, keycloak, Keycloak};
use super::{kc_password, start_berth, GRANT_CACHE, LOCAL_PASSWORD, LOCAL_USER};

#[test]
fn keycloak_stopped_local_users_unaffected_federated_503_then_recovers() {
    let Some(kc) = keycloak("keycloak-down") else {
        return;
    };
    // Stops the shared Keycloak: no other Keycloak test may run meanwhile.
    let _kc = fixture::exclusive();
    let berth_started = Instant::now();
    let s = start_berth(kc);
    let federated = ("grace", kc_password("grace"));
    let scope = ["repository:team-a/app:pull"];
    let local = || {
        s.get_token(
            Some((LOCAL_USER, LOCAL_PASSWORD)),
            &[&format!("repository:{LOCAL_USER}/app:pull")],
        )
    };
    let fed = || s.get_token(Some((federated.0, &federated.1)), &scope);
    assert_eq!(
        fed().0,
        200,
        "grace before Keycloak stops\n{}",
        s.log_tail(30)
    );
    eprintln!("berth up in {:?}", berth_started.elapsed());

    kc.stop();
    // Should an assertion fail while Keycloak is down, bring it back for the
    // other tests.
    let mut down = RestartOnDrop(Some(kc));
    thread::sleep(GRANT_CACHE + Duration::from_secs(1));
    let (status, body) = local();
    assert_eq!(status, 200, "local user while Keycloak is down: {body}");
    let (status, body) = fed();
    assert_eq!(
        status,
        503,
        "federated user while Keycloak is down should get 503: {body}\n{}",
        s.log_tail(30)
    );
    let text = body.to_string();
    assert!(
        text.contains("identity provider"),
        "the error should name the identity provider: {text}"
    );
    eprintln!("ok: Keycloak down: local 200, federated 503 ({text})");

    let restart = Instant::now();
    down.0 = None;
    kc.start()
        .unwrap_or_else(|e| panic!("Keycloak restart: {e}"));
    eprintln!("keycloak restarted in {:?}", restart.elapsed());
    // berth was not restarted; it may still back off for a moment.
    let t = Instant::now();
    let (status, body) = loop {
        let (status, body) = fed();
        if status == 200 || t.elapsed() > Duration::from_secs(20) {
            break (status, body);
        }
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        status,
        200,
        "federated user after Keycloak came back: {body}\n{}",
        s.log_tail(30)
    );
    assert_eq!(local().0, 200, "local user after Keycloak came back");
}

/// Starts Keycloak again when dropped while still holding it.
struct RestartOnDrop<'a>(Option<&'a Keycloak>);

impl Drop for RestartOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(kc) = self.0.take() {
            if let Err(e) = kc.start() {
                eprintln!("could not restart Keycloak: {e}");
            }
        }
    }
}
