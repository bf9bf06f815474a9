//! Chrome's tabs API for a session (the SDK's `tabs.*`, `POST <base_url>/tabs.<method>`):
//! calls and events go to and from the tabs agent the browser loaded
//! ([`crate::browser::tabs_ext`]), through the session's DevTools pipe. The agent's worker is
//! attached from the session's start to its end, so Chrome never stops it for idleness, and
//! re-attached whenever it is replaced.
//!
//! What the agent says is the browser's and so untrusted: events are only passed on to the
//! session's own viewers, sizes are bounded, and a tab it names is followed only if the live
//! view knows it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// How long a call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call waits for the agent's worker (a session that just started).
const START_WAIT: Duration = Duration::from_secs(10);
/// Largest answer taken from the agent, bytes of JSON.
const MAX_MESSAGE: usize = 256 * 1024;
/// Largest event passed on (a page's long URL or title makes no bigger ones), bytes of JSON.
const MAX_EVENT: usize = 32 * 1024;
/// The binding the agent calls with its events.
const BINDING: &str = "pvTabsEvent";

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $(#[doc = $s] $v),+ }
        impl $name {
            /// Every one.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// Chrome's name.
            pub fn name(self) -> &'static str { match self { $($name::$v => $s),+ } }
            /// From Chrome's name.
            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|m| m.name() == s)
            }
        }
    };
}

named_enum!(
    /// A method of `chrome.tabs` that viewers and apps may call.
    Method {
        Query = "query",
        Get = "get",
        Create = "create",
        Update = "update",
        Remove = "remove",
        Reload = "reload",
        GoBack = "goBack",
        GoForward = "goForward",
        Duplicate = "duplicate",
        Discard = "discard",
        Move = "move",
        Highlight = "highlight",
        Group = "group",
        Ungroup = "ungroup",
        GetZoom = "getZoom",
        SetZoom = "setZoom",
        GetZoomSettings = "getZoomSettings",
        SetZoomSettings = "setZoomSettings",
        DetectLanguage = "detectLanguage",
    }
);

impl Method {
    /// Whether it only reads (any user with `chrome_apis`); the others change the browser
    /// (they also need `control`, as input does).
    pub fn reads_only(self) -> bool {
        matches!(
            self,
            Method::Query
                | Method::Get
                | Method::GetZoom
                | Method::GetZoomSettings
                | Method::DetectLanguage
        )
    }
}

named_enum!(
    /// An event of `chrome.tabs` (named as Chrome names them).
    #[allow(clippy::enum_variant_names)]
    EventKind {
        OnActivated = "onActivated",
        OnCreated = "onCreated",
        OnHighlighted = "onHighlighted",
        OnMoved = "onMoved",
        OnRemoved = "onRemoved",
        OnReplaced = "onReplaced",
        OnUpdated = "onUpdated",
        OnZoomChange = "onZoomChange",
    }
);

/// One event: its kind and its listener's arguments, as Chrome gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Which.
    pub kind: EventKind,
    /// The arguments (an array).
    pub args: Value,
}

/// Why a call was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The arguments are not what the method takes (checked before Chrome sees them).
    #[error("{0}")]
    BadArguments(String),
    /// Chrome refused (its own message, e.g. "No tab with id: 7.").
    #[error("{0}")]
    Refused(String),
    /// The browser has no tabs agent, or it does not answer.
    #[error("the tabs API is not available in this session: {0}")]
    Unavailable(String),
}

struct Worker {
    cdp: Arc<crate::cdp::Cdp>,
    session: String,
}

/// The tabs API of one session's browser.
pub struct Agent {
    /// The attached worker, when one runs.
    worker: tokio::sync::watch::Sender<Option<Arc<Worker>>>,
    /// Whether the browser loaded the agent at all.
    loaded: bool,
    /// Why there is no worker (yet), for errors.
    missing: Mutex<String>,
    events: broadcast::Sender<Arc<Event>>,
    /// The DevTools target of each newly active tab (for the live view to follow).
    activated: broadcast::Sender<String>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").finish_non_exhaustive()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().expect("task").take() {
            t.abort();
        }
    }
}

impl Agent {
    /// The tabs API of the browser behind `mux`, whose agent has the id `extension` (`None`:
    /// it loaded none, and every call says so). Starts following the agent's worker at once.
    pub fn start(mux: Arc<crate::browser::mux::Mux>, extension: Option<&str>) -> Arc<Agent> {
        let agent = Arc::new(Agent {
            worker: tokio::sync::watch::channel(None).0,
            loaded: extension.is_some(),
            missing: Mutex::new(match extension {
                Some(_) => "the browser's tabs agent has not started yet".into(),
                None => "the browser has no tabs agent".into(),
            }),
            events: broadcast::channel(64).0,
            activated: broadcast::channel(16).0,
            task: Mutex::new(None),
        });
        if let Some(ext) = extension {
            let prefix = format!("chrome-extension://{ext}/");
            let task = tokio::spawn(follow(Arc::downgrade(&agent), mux, prefix));
            *agent.task.lock().expect("task") = Some(task);
        }
        agent
    }

    /// Every event from now on (a receiver that lags loses the oldest).
    pub fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// The DevTools target id of every tab that becomes active from now on.
    pub fn activated(&self) -> broadcast::Receiver<String> {
        self.activated.subscribe()
    }

    /// Calls `chrome.tabs.<method>(...args)` and returns what it resolves to (`null` for
    /// nothing).
    ///
    /// # Errors
    /// [`Error`].
    pub async fn call(&self, method: Method, args: Vec<Value>) -> Result<Value, Error> {
        check_args(method, &args)?;
        let mut rx = self.worker.subscribe();
        let w = match self.loaded {
            true => tokio::time::timeout(START_WAIT, rx.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|w| w.clone()),
            false => None,
        };
        let Some(w) = w else {
            return Err(Error::Unavailable(
                self.missing.lock().expect("missing").clone(),
            ));
        };
        let args = Value::Array(args).to_string();
        if args.len() > MAX_MESSAGE {
            return Err(Error::BadArguments("the arguments are too large".into()));
        }
        // Both are JSON strings, which are JavaScript string literals.
        let expression = format!(
            "pvTabs({}, {})",
            Value::from(method.name()),
            Value::from(args)
        );
        let r = w
            .cdp
            .call(
                Some(&w.session),
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await
            .map_err(Error::Unavailable)?;
        if let Some(e) = r.get("exceptionDetails") {
            let msg = e["exception"]["description"]
                .as_str()
                .or(e["text"].as_str())
                .unwrap_or("failed");
            // "Error: No tab with id: 7.\n    at ..." -> "No tab with id: 7."
            let first = msg.lines().next().unwrap_or(msg);
            return Err(Error::Refused(
                first.strip_prefix("Error: ").unwrap_or(first).to_string(),
            ));
        }
        let v = r["result"]["value"].clone();
        if v.to_string().len() > MAX_MESSAGE {
            return Err(Error::Unavailable("the answer is too large".into()));
        }
        Ok(v)
    }
}

/// What Chrome would take but a person must not: pages other than the web's.
fn check_args(method: Method, args: &[Value]) -> Result<(), Error> {
    if args.len() > 4 {
        return Err(Error::BadArguments(format!(
            "tabs.{} takes at most 4 arguments",
            method.name()
        )));
    }
    if matches!(method, Method::Create | Method::Update) {
        for a in args {
            if let Some(u) = a.get("url") {
                let ok = u.as_str().is_some_and(super::input::navigable);
                if !ok {
                    return Err(Error::BadArguments(
                        "only http(s) URLs and about:blank can be opened".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Attaches to the agent's worker whenever one runs, and passes its events on, until the
/// agent is dropped or the browser goes away.
async fn follow(agent: std::sync::Weak<Agent>, mux: Arc<crate::browser::mux::Mux>, prefix: String) {
    let (cdp, mut events) = match crate::cdp::Cdp::connect_resident(&mux, CALL_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(a) = agent.upgrade() {
                *a.missing.lock().expect("missing") = e;
            }
            return;
        }
    };
    let cdp = Arc::new(cdp);
    if cdp
        .call(None, "Target.setDiscoverTargets", json!({"discover": true}))
        .await
        .is_err()
    {
        return;
    }
    // The worker's target id and DevTools session.
    let mut current: Option<(String, String)> = None;
    while let Some(v) = events.recv().await {
        let Some(agent) = agent.upgrade() else { return };
        let p = &v["params"];
        match v["method"].as_str().unwrap_or_default() {
            "Target.targetCreated" | "Target.targetInfoChanged" => {
                let t = &p["targetInfo"];
                let ours = t["type"] == "service_worker"
                    && t["url"].as_str().is_some_and(|u| u.starts_with(&prefix));
                let id = t["targetId"].as_str().unwrap_or_default();
                if !ours || current.as_ref().is_some_and(|c| c.0 == id) {
                    continue;
                }
                match attach(&cdp, id).await {
                    Ok(session) => {
                        current = Some((id.to_string(), session.clone()));
                        let w = Worker {
                            cdp: cdp.clone(),
                            session,
                        };
                        agent.worker.send_replace(Some(Arc::new(w)));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "tabs agent: cannot attach");
                        *agent.missing.lock().expect("missing") = e;
                    }
                }
            }
            "Target.targetDestroyed"
                if current
                    .as_ref()
                    .is_some_and(|c| p["targetId"] == c.0.as_str()) =>
            {
                current = None;
                agent.worker.send_replace(None);
                *agent.missing.lock().expect("missing") = "the browser's tabs agent stopped".into();
            }
            "Runtime.bindingCalled" => {
                let from_worker = current
                    .as_ref()
                    .is_some_and(|c| v["sessionId"] == c.1.as_str());
                let payload = p["payload"].as_str().unwrap_or_default();
                if p["name"] != BINDING || !from_worker || payload.len() > MAX_EVENT {
                    continue;
                }
                match parse_event(payload) {
                    Some(Said::Event(e)) => {
                        let _ = agent.events.send(Arc::new(e));
                    }
                    Some(Said::Activated(target)) => {
                        let _ = agent.activated.send(target);
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }
}

async fn attach(cdp: &crate::cdp::Cdp, target: &str) -> Result<String, String> {
    let r = cdp
        .call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )
        .await?;
    let session = r["sessionId"]
        .as_str()
        .ok_or("no session from attachToTarget")?
        .to_string();
    cdp.call(
        Some(&session),
        "Runtime.addBinding",
        json!({"name": BINDING}),
    )
    .await?;
    cdp.call(Some(&session), "Runtime.enable", json!({}))
        .await?;
    Ok(session)
}

/// What the agent says through its binding.
#[derive(Debug, PartialEq)]
enum Said {
    Event(Event),
    /// A tab became active: its DevTools target id.
    Activated(String),
}

fn parse_event(payload: &str) -> Option<Said> {
    let v: Value = serde_json::from_str(payload).ok()?;
    if let Some(t) = v["activated"].as_str() {
        return Some(Said::Activated(t.to_string()));
    }
    let kind = EventKind::parse(v["e"].as_str()?)?;
    let args = v.get("a").filter(|a| a.is_array())?.clone();
    Some(Said::Event(Event { kind, args }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.name()), Some(*m));
        }
        for e in EventKind::ALL {
            assert_eq!(EventKind::parse(e.name()), Some(*e));
        }
        assert_eq!(Method::parse("executeScript"), None);
        assert_eq!(Method::parse("constructor"), None);
    }

    /// The agent's own list is the same as ours: a method one side lacks is refused there.
    #[test]
    fn the_agent_knows_every_method_and_event() {
        let js = include_str!("../browser/tabs_ext/agent.js");
        for m in Method::ALL {
            assert!(js.contains(&format!("'{}'", m.name())), "{}", m.name());
        }
        for e in EventKind::ALL {
            assert!(js.contains(&format!("'{}'", e.name())), "{}", e.name());
        }
    }

    #[test]
    fn only_web_pages_are_opened() {
        let bad = [
            "javascript:alert(1)",
            "file:///etc/passwd",
            "chrome://settings",
        ];
        for u in bad {
            let r = check_args(Method::Create, &[json!({"url": u})]);
            assert!(matches!(r, Err(Error::BadArguments(_))), "{u}");
            let r = check_args(Method::Update, &[json!(3), json!({"url": u})]);
            assert!(matches!(r, Err(Error::BadArguments(_))), "{u}");
        }
        check_args(Method::Create, &[json!({"url": "https://example.com/"})]).unwrap();
        check_args(Method::Update, &[json!({"active": true})]).unwrap();
        check_args(Method::Query, &[json!({})]).unwrap();
        assert!(check_args(Method::Query, &vec![json!(1); 5]).is_err());
    }

    #[test]
    fn events_are_parsed_and_anything_else_dropped() {
        assert_eq!(
            parse_event(r#"{"e":"onRemoved","a":[7,{"windowId":1,"isWindowClosing":false}]}"#),
            Some(Said::Event(Event {
                kind: EventKind::OnRemoved,
                args: json!([7, {"windowId": 1, "isWindowClosing": false}])
            }))
        );
        assert_eq!(
            parse_event(r#"{"activated":"ABC"}"#),
            Some(Said::Activated("ABC".into()))
        );
        for junk in [
            r#"{"e":"onHacked","a":[]}"#,
            r#"{"e":"onCreated","a":5}"#,
            "nope",
            "[]",
        ] {
            assert_eq!(parse_event(junk), None, "{junk}");
        }
    }
}
