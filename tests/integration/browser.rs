//! Headless Chromium driven over WebDriver: Debian's chromium and chromedriver, one private
//! profile per session, nothing reaching out to the network. Shared by the console's test and
//! the playback harness.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::in_ci;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether Chromium and chromedriver are installed; in CI their absence is a failure.
pub fn browser() -> bool {
    let ok = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    assert!(ok || !in_ci(), "chromium and chromium-driver are not installed, and CI=true forbids skipping");
    if !ok {
        eprintln!("skipped: chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)");
    }
    ok
}

/// chromedriver on a free port, and a headless Chromium session through it; both end on drop.
pub struct Browser {
    pub client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            // Its own process group, which the browsers it starts join: dropping the session ends
            // them all (killing chromedriver alone leaves Chromium running).
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile folder");
        // Flags as the machine's notes advise: headless, no sandbox as root, and nothing that
        // reaches out to the network on its own.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "unhandledPromptBehavior": "ignore",
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(err) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("no WebDriver session: {err}"),
            }
        };
        Browser { client, _driver: driver, _profile: profile }
    }

    /// Runs `script` (a function body; `arguments` as usual) until it returns true.
    pub async fn until(&self, what: &str, timeout: Duration, script: &str, args: Vec<Value>) {
        let started = Instant::now();
        loop {
            let value = self.client.execute(script, args.clone()).await.expect("run a script");
            if value == Value::Bool(true) {
                return;
            }
            if started.elapsed() > timeout {
                let page = self.text("body").await;
                panic!("waited {timeout:?} for {what}; the page says:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The element `css` names, once the page has it (parts of the page render after a fetch).
    pub async fn element(&self, css: &str) -> fantoccini::elements::Element {
        let script = "return !!document.querySelector(arguments[0])";
        self.until(&format!("`{css}`"), Duration::from_secs(15), script, vec![json!(css)]).await;
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    pub async fn click(&self, css: &str) {
        self.element(css).await.click().await.expect(css);
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("type");
    }

    pub async fn screenshot(&self, folder: &Path, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(folder.join(format!("{name}.png")), png).expect("save the screenshot");
    }

    /// Whether an alert is open (a script ran that should not have).
    pub async fn alert_open(&self) -> bool {
        self.client.get_alert_text().await.is_ok()
    }
}

impl Drop for Browser {
    /// Ends chromedriver's process group: the driver and every Chromium process it started.
    fn drop(&mut self) {
        if let Some(pid) = self._driver.id() {
            let group = format!("-{pid}");
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &group]).status();
        }
    }
}
