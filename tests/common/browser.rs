//! Headless Chromium driven over the DevTools protocol, for end-to-end
//! tests of the dashboard: launch, open a page, evaluate JavaScript, take
//! screenshots. Chromium is killed when the [`Browser`] is dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::within;

/// Where the Debian package `chromium` installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The attached page's DevTools session.
    session: String,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens a blank page. Fails
    /// the test if Chromium is not installed.
    pub async fn launch() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} not found: the dashboard test needs Chromium \
             (`apt-get install chromium` on Debian or Ubuntu)"
        );
        static LAUNCHES: AtomicU32 = AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "tickcast-chromium-{}-{}",
            std::process::id(),
            LAUNCHES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("create the Chromium profile directory");

        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-quic",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Its own process group, so the renderers go with it on drop.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("start Chromium");

        // The DevTools address is printed on stderr; keep draining stderr
        // afterwards so Chromium never blocks on a full pipe.
        let stderr = child.stderr.take().expect("piped stderr");
        let (found, address) = oneshot::channel();
        std::thread::spawn(move || {
            let mut found = Some(found);
            let mut seen = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(found) = found.take() {
                        let _ = found.send(Ok(url.trim().to_string()));
                    }
                } else if found.is_some() {
                    seen.push(line);
                }
            }
            if let Some(found) = found.take() {
                let _ = found.send(Err(seen.join("\n")));
            }
        });

        let mut browser_guard = ChildGuard {
            child: Some(child),
            profile: Some(profile.clone()),
        };
        let url = match within("Chromium's DevTools address", address).await {
            Ok(Ok(url)) => url,
            Ok(Err(stderr)) => panic!("Chromium exited before listening:\n{stderr}"),
            Err(_) => panic!("Chromium's stderr reader ended"),
        };
        let (socket, _) = within(
            "the DevTools connection",
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .expect("connect to DevTools");
        let mut browser = Browser {
            child: browser_guard.child.take().expect("child"),
            profile: browser_guard.profile.take().expect("profile"),
            socket,
            session: String::new(),
            next_id: 0,
        };

        let target = browser
            .command("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser
            .command(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser
    }

    /// Sends a DevTools command (to the page, once attached) and returns its
    /// result; events in between are skipped.
    pub async fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            request["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(request.to_string()))
            .await
            .expect("send a DevTools command");
        let what = format!("the answer to {method}");
        within(&what, async {
            loop {
                let message = self
                    .socket
                    .next()
                    .await
                    .expect("DevTools connection ended")
                    .expect("DevTools read");
                let Message::Text(text) = message else {
                    continue;
                };
                let reply: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if reply["id"] != json!(id) {
                    continue;
                }
                if let Some(error) = reply.get("error") {
                    panic!("{method} failed: {error}");
                }
                return reply["result"].clone();
            }
        })
        .await
    }

    /// Loads `url` and waits until the document and its scripts have run.
    pub async fn navigate(&mut self, url: &str) {
        let result = self.command("Page.navigate", json!({"url": url})).await;
        if let Some(error) = result.get("errorText") {
            panic!("navigating to {url} failed: {error}");
        }
        self.wait_for(
            &format!("{url} to load"),
            "document.readyState === 'complete'",
        )
        .await;
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value as JSON. A thrown exception fails the test.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!("`{expression}` threw: {details}");
        }
        result["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Polls `expression` until it is truthy (not null, false, 0 or "") and
    /// returns that value; fails the test after the harness timeout.
    pub async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        within(what, async {
            loop {
                let value = self.eval(expression).await;
                let truthy = match &value {
                    Value::Null | Value::Bool(false) => false,
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if truthy {
                    return value;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .command("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = decode_base64(shot["data"].as_str().expect("screenshot data"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Kills Chromium if launching fails half-way.
struct ChildGuard {
    child: Option<Child>,
    profile: Option<PathBuf>,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill(child);
        }
        if let Some(profile) = &self.profile {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

/// Kills Chromium's process group (browser, zygote, renderers), then reaps
/// the browser process.
fn kill(child: &mut Child) {
    let group = format!("-{}", child.id());
    let killed_group = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !killed_group {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Standard base64 (as DevTools sends binary data), padding optional.
fn decode_base64(text: &str) -> Vec<u8> {
    fn value(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    }
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (value(c) << (18 - 6 * i)));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
