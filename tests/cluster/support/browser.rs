//! Headless Chromium for page tests, driven over the DevTools protocol (CDP) on one WebSocket:
//! a page target with a flat session, commands answered by id, and every JavaScript error
//! (uncaught exceptions, `console.error`, failed loads) collected.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools command may take on a loaded machine.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The Chromium binary: `DYNAKV_CHROMIUM` if set, else the first of Debian's names on `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("DYNAKV_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A headless Chromium process with one page open, killed on drop.
pub struct Browser {
    child: tokio::process::Child,
    /// Keeps the profile directory until the browser is gone.
    _profile: tempfile::TempDir,
    sink: tokio::sync::Mutex<SplitSink<Socket, Message>>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    next_id: AtomicU64,
    /// Every JavaScript error the page reported, as text.
    pub errors: Arc<Mutex<Vec<String>>>,
    session: String,
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile and opens a blank page.
    pub async fn launch(chromium: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        // Chromium prints its DevTools address on stderr; keep draining it afterwards.
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let (found, address) = oneshot::channel();
        tokio::spawn(async move {
            let mut found = Some(found);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ")
                    && let Some(found) = found.take()
                {
                    let _ = found.send(url.trim().to_string());
                }
            }
        });
        let url = tokio::time::timeout(COMMAND_DEADLINE, address)
            .await
            .expect("chromium prints its DevTools address within a minute")
            .expect("chromium exited before printing its DevTools address");
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("CDP");
        let (sink, mut stream) = socket.split();
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (replies, seen) = (pending.clone(), errors.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                let Ok(doc) = serde_json::from_str::<Value>(&text) else { continue };
                if let Some(id) = doc["id"].as_u64() {
                    if let Some(reply) = replies.lock().remove(&id) {
                        let _ = reply.send(doc);
                    }
                } else if let Some(error) = javascript_error(&doc) {
                    seen.lock().push(error);
                }
            }
        });
        let mut browser = Browser {
            child,
            _profile: profile,
            sink: tokio::sync::Mutex::new(sink),
            pending,
            next_id: AtomicU64::new(1),
            errors,
            session: String::new(),
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" })).await;
        let target = target["targetId"].as_str().expect("a target id").to_string();
        let attach = json!({ "targetId": target, "flatten": true });
        let attached = browser.call("Target.attachToTarget", attach).await;
        browser.session = attached["sessionId"].as_str().expect("a session id").to_string();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// Sends one command (to the page's session once there is one) and returns its result.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            command["sessionId"] = self.session.clone().into();
        }
        let (reply, answer) = oneshot::channel();
        self.pending.lock().insert(id, reply);
        let text = command.to_string();
        self.sink.lock().await.send(Message::Text(text.into())).await.expect("send to chromium");
        let doc = tokio::time::timeout(COMMAND_DEADLINE, answer)
            .await
            .unwrap_or_else(|_| panic!("{method} got no answer within {COMMAND_DEADLINE:?}"))
            .expect("chromium closed the connection");
        assert!(doc.get("error").is_none(), "{method}: {}", doc["error"]);
        doc["result"].clone()
    }

    /// Opens `url` in the page.
    pub async fn navigate(&self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&self, expression: &str) -> Value {
        let params = json!({ "expression": expression, "returnByValue": true });
        let result = self.call("Runtime.evaluate", params).await;
        result["result"]["value"].clone()
    }

    /// A PNG screenshot of the page.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        let data = shot["data"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD.decode(data).expect("base64 PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The text of a CDP event that reports a JavaScript error, if it is one.
fn javascript_error(event: &Value) -> Option<String> {
    let params = &event["params"];
    match event["method"].as_str()? {
        "Runtime.exceptionThrown" => {
            let details = &params["exceptionDetails"];
            Some(format!("uncaught: {} {}", details["text"], details["exception"]["description"]))
        }
        "Runtime.consoleAPICalled"
            if matches!(params["type"].as_str(), Some("error" | "assert")) =>
        {
            Some(format!("console.{}: {}", params["type"], params["args"]))
        }
        "Log.entryAdded" if params["entry"]["level"] == "error" => {
            Some(format!("log: {} ({})", params["entry"]["text"], params["entry"]["url"]))
        }
        _ => None,
    }
}
