//! Headless Chromium driven through chromedriver's W3C WebDriver HTTP API: just
//! enough to open pages, fill fields, click and read text.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::proc::{free_port, Daemon};
use crate::components::rt;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    url: String,
    session: String,
    _driver: Daemon,
}

fn call(method: &str, url: &str, body: Option<Value>) -> Value {
    rt().block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let req = match method {
            "POST" => client.post(url).json(&body.unwrap_or_else(|| json!({}))),
            "DELETE" => client.delete(url),
            _ => client.get(url),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let text = resp.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    })
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium profile in `dir`.
    pub fn start(dir: &Path) -> Browser {
        std::fs::create_dir_all(dir).expect("browser dir");
        let port = free_port();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1");
        let driver = Daemon::spawn("chromedriver", cmd, dir, Duration::from_secs(5));
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while crate::components::http_get(&format!("{url}/status"), None).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start\n{}",
                driver.log_tail(30)
            );
            thread::sleep(Duration::from_millis(100));
        }
        let profile = dir.join("profile");
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args
            }
        }}});
        let resp = call("POST", &format!("{url}/session"), Some(caps));
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {resp}\n{}", driver.log_tail(30)))
            .to_owned();
        Browser {
            url,
            session,
            _driver: driver,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = call(
            method,
            &format!("{}/session/{}{path}", self.url, self.session),
            body,
        );
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn page_source(&self) -> String {
        self.cmd("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element matching a CSS selector, waiting up to `wait` for it.
    pub fn find(&self, css: &str, wait: Duration) -> Option<String> {
        let started = Instant::now();
        loop {
            let v = self.cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            );
            if let Some(id) = v[ELEMENT].as_str() {
                return Some(id.to_owned());
            }
            if started.elapsed() > wait {
                return None;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    #[track_caller]
    pub fn must_find(&self, css: &str, what: &str) -> String {
        self.find(css, Duration::from_secs(60)).unwrap_or_else(|| {
            panic!(
                "{what}: no element {css:?} on {}\n{}",
                self.current_url(),
                self.page_source().chars().take(3000).collect::<String>()
            )
        })
    }

    pub fn click(&self, element: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    pub fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Reloads the page, as the browser's reload button does.
    pub fn refresh(&self) {
        self.cmd("POST", "/refresh", Some(json!({})));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page
    /// and returns its value.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Emulates a screen `width` × `height` CSS pixels wide (a phone when
    /// `mobile`), through the DevTools protocol: Chromium's windows have a
    /// minimum width above a phone's.
    pub fn emulate_screen(&self, width: u32, height: u32, mobile: bool) {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Emulation.setDeviceMetricsOverride",
                "params": {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
            })),
        );
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", None);
        data_encoding::BASE64
            .decode(b64.as_str().unwrap_or_default().as_bytes())
            .expect("a base64 screenshot")
    }

    pub fn text(&self, element: &str) -> String {
        self.cmd("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Signs in through berth's page at `berth_url` (which may send the
    /// browser on to another berth) with Keycloak's form, and returns the
    /// name berth's token page shows. It waits for berth's `<strong
    /// id="username">`, not for any `#username`: Keycloak's login field has
    /// that id too and is still on screen while the form submits.
    #[track_caller]
    pub fn keycloak_sign_in(&self, berth_url: &str, user: &str, password: &str) -> String {
        self.goto(&format!("{berth_url}/login"));
        let link = self.must_find("#sign-in-keycloak", "berth's sign-in page");
        self.click(&link);
        let field = self.must_find("input#username", "Keycloak's login form");
        self.type_into(&field, user);
        let pw = self.must_find("input#password", "Keycloak's login form");
        self.type_into(&pw, password);
        let submit = self.must_find("#kc-login", "Keycloak's login form");
        self.click(&submit);
        let name = self.must_find("strong#username", "berth's token page after sign-in");
        self.text(&name)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = call(
            "DELETE",
            &format!("{}/session/{}", self.url, self.session),
            None,
        );
    }
}
