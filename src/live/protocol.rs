//! The viewer protocol: every message a viewer may send on the live-view socket, parsed
//! once from its JSON (`{"t": <kind>, ...}`) into a typed [`Message`]. Numbers are bounded
//! and fields a message may omit get their defaults here, so what handles a message
//! ([`super::input`]) never reads JSON. A message that breaks the protocol is a
//! [`Malformed`] error: the socket closes with its text.

use std::collections::BTreeSet;

use serde_json::Value;

use super::chrome_tabs::{EventKind, Method};
use crate::display::input::Button;

/// Why a message breaks the protocol (the close reason sent to the viewer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

fn malformed(what: impl Into<String>) -> Malformed {
    Malformed(what.into())
}

macro_rules! kinds {
    ($($v:ident = $s:literal),+ $(,)?) => {
        /// What a message is (its `t`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind { $(#[doc = concat!("`", $s, "`")] $v),+ }
        impl Kind {
            /// The kind of message `m`.
            ///
            /// # Errors
            /// No `t`, or one the protocol does not have.
            pub fn of(m: &Value) -> Result<Kind, Malformed> {
                let t = m["t"].as_str().ok_or_else(|| malformed("message without `t`"))?;
                match t {
                    $($s => Ok(Kind::$v),)+
                    _ => Err(Malformed(format!("unknown message type `{t}`"))),
                }
            }
        }
    };
}

kinds!(
    Ping = "ping",
    Auth = "auth",
    Mouse = "mouse",
    Wheel = "wheel",
    Key = "key",
    Text = "text",
    Paste = "paste",
    Ime = "ime",
    Nav = "nav",
    Goto = "goto",
    Tab = "tab",
    Resize = "resize",
    Rtt = "rtt",
    VideoPaused = "video_paused",
    TabsCall = "tabs_call",
    TabsListen = "tabs_listen",
);

impl Kind {
    /// Whether it is input to the browser: only a user in control, when input is accepted.
    pub fn is_input(self) -> bool {
        matches!(
            self,
            Kind::Mouse
                | Kind::Wheel
                | Kind::Key
                | Kind::Ime
                | Kind::Text
                | Kind::Paste
                | Kind::Nav
                | Kind::Goto
        )
    }

    /// Whether it counts as the user's activity (a round-trip probe does not).
    pub fn is_activity(self) -> bool {
        self != Kind::Rtt
    }
}

/// Modifier keys held (`modifiers`: Alt 1, Ctrl 2, Meta 4, Shift 8, as DevTools has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Modifiers(pub u64);

impl Modifiers {
    fn of(m: &Value) -> Modifiers {
        Modifiers(m["modifiers"].as_u64().unwrap_or(0) & 0b1111)
    }

    /// The editing command Chromium runs for a shortcut of `key` with these modifiers
    /// (headless Chromium has no menu accelerators).
    pub fn shortcut(self, key: &str) -> Option<&'static str> {
        let mods = self.0;
        let ctrl_or_meta = mods & (2 | 4) != 0;
        if !ctrl_or_meta || mods & 1 != 0 {
            return None;
        }
        let shift = mods & 8 != 0;
        Some(match (key.to_ascii_lowercase().as_str(), shift) {
            ("a", false) => "selectAll",
            ("c", false) => "copy",
            ("x", false) => "cut",
            ("z", false) => "undo",
            ("z", true) | ("y", false) => "redo",
            _ => return None,
        })
    }
}

/// What a pointer message does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MouseAction {
    /// `mousePressed`.
    Pressed,
    /// `mouseReleased`.
    Released,
    /// `mouseMoved`.
    Moved,
}

impl MouseAction {
    /// DevTools' name.
    pub fn name(self) -> &'static str {
        match self {
            MouseAction::Pressed => "mousePressed",
            MouseAction::Released => "mouseReleased",
            MouseAction::Moved => "mouseMoved",
        }
    }
}

/// `{"t": "mouse", "type", "x", "y", "button"?, "buttons"?, "clickCount"?, "modifiers"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mouse {
    /// Pressed, released, moved.
    pub action: MouseAction,
    /// Position in the picture's pixels.
    pub x: f64,
    /// Position in the picture's pixels.
    pub y: f64,
    /// The button pressed or released (`none`: no button).
    pub button: Option<Button>,
    /// Buttons held (DevTools' bit mask).
    pub buttons: u64,
    /// Clicks in a row (at most 3).
    pub click_count: u64,
    /// Modifier keys.
    pub modifiers: Modifiers,
}

/// `{"t": "wheel", "x", "y", "deltaX"?, "deltaY"?, "modifiers"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Wheel {
    /// Position.
    pub x: f64,
    /// Position.
    pub y: f64,
    /// Horizontal scroll.
    pub dx: f64,
    /// Vertical scroll.
    pub dy: f64,
    /// Modifier keys.
    pub modifiers: Modifiers,
}

/// `{"t": "key", "type": "keyDown"|"keyUp", "key", "code"?, "keyCode"?, "text"?, "modifiers"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Pressed (`keyDown`) or released.
    pub down: bool,
    /// The key's value (`KeyboardEvent.key`, at most 32 bytes).
    pub key: String,
    /// The physical key (`KeyboardEvent.code`, at most 32 bytes; may be empty).
    pub code: String,
    /// Windows virtual key code (at most 255).
    pub key_code: u64,
    /// Text the key types (a key down only, at most 2 characters).
    pub text: Option<String>,
    /// Modifier keys.
    pub modifiers: Modifiers,
}

/// `{"t": "nav", "action"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// History back.
    Back,
    /// History forward.
    Forward,
    /// Reload.
    Reload,
}

/// `{"t": "tab", "action", "id"?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tab {
    /// Show tab `id`.
    Switch(String),
    /// Close tab `id`.
    Close(String),
    /// Open a blank tab.
    New,
}

/// `{"t": "tabs_call", "i", "m", "a"?}`: `chrome.tabs.<m>(...a)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TabsCall {
    /// The caller's id of the call, echoed in the answer.
    pub i: u64,
    /// The method, or why `m` names none (answered as the call's error).
    pub method: Result<Method, String>,
    /// Its arguments.
    pub args: Vec<Value>,
}

/// One message of a viewer.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Keeps the socket alive.
    Ping,
    /// The auth webhook's message (read before any other; later, nothing).
    Auth,
    /// Pointer.
    Mouse(Mouse),
    /// Scroll.
    Wheel(Wheel),
    /// A key.
    Key(Key),
    /// Text typed (`text`) or pasted (`paste`).
    Text {
        /// The text.
        text: String,
        /// Pasted rather than typed.
        pasted: bool,
    },
    /// An input method's composition so far.
    Ime(String),
    /// History and reload.
    Nav(Nav),
    /// Open a URL in the tab shown.
    Goto(String),
    /// Tabs of the tab strip.
    Tab(Tab),
    /// The viewer's size: the browser fits it (role `resize`).
    Resize {
        /// Width, pixels (unclamped).
        width: u64,
        /// Height, pixels (unclamped).
        height: u64,
    },
    /// A round-trip probe, echoed.
    Rtt(f64),
    /// The viewer stops or resumes the picture.
    VideoPaused(bool),
    /// A call of Chrome's tabs API.
    TabsCall(TabsCall),
    /// The tabs events the viewer wants.
    TabsListen(BTreeSet<EventKind>),
}

/// A finite number, clamped to ±`max`.
fn num(v: &Value, max: f64) -> Option<f64> {
    v.as_f64()
        .filter(|n| n.is_finite())
        .map(|n| n.clamp(-max, max))
}

fn str_field<'a>(m: &'a Value, key: &str, what: &str) -> Result<&'a str, Malformed> {
    m[key].as_str().ok_or_else(|| malformed(what))
}

fn position(m: &Value, what: &str) -> Result<(f64, f64), Malformed> {
    Ok((
        num(&m["x"], 1e5).ok_or_else(|| Malformed(format!("{what}.x")))?,
        num(&m["y"], 1e5).ok_or_else(|| Malformed(format!("{what}.y")))?,
    ))
}

impl Message {
    /// Message `m`, of kind `kind` ([`Kind::of`]).
    ///
    /// # Errors
    /// A field is missing or not what the protocol says.
    pub fn parse(kind: Kind, m: &Value) -> Result<Message, Malformed> {
        Ok(match kind {
            Kind::Ping => Message::Ping,
            Kind::Auth => Message::Auth,
            Kind::Mouse => Message::Mouse(mouse(m)?),
            Kind::Wheel => {
                let (x, y) = position(m, "wheel")?;
                Message::Wheel(Wheel {
                    x,
                    y,
                    dx: num(&m["deltaX"], 1e5).unwrap_or(0.0),
                    dy: num(&m["deltaY"], 1e5).unwrap_or(0.0),
                    modifiers: Modifiers::of(m),
                })
            }
            Kind::Key => Message::Key(key(m)?),
            Kind::Text | Kind::Paste => Message::Text {
                text: str_field(m, "text", "text")?.to_string(),
                pasted: kind == Kind::Paste,
            },
            Kind::Ime => Message::Ime(str_field(m, "text", "ime.text")?.to_string()),
            Kind::Nav => Message::Nav(match m["action"].as_str().unwrap_or_default() {
                "back" => Nav::Back,
                "forward" => Nav::Forward,
                "reload" => Nav::Reload,
                _ => return Err(malformed("nav.action must be back, forward or reload")),
            }),
            Kind::Goto => Message::Goto(str_field(m, "url", "goto.url")?.to_string()),
            Kind::Tab => {
                let id = m["id"].as_str().unwrap_or_default().to_string();
                Message::Tab(match m["action"].as_str().unwrap_or_default() {
                    "switch" => Tab::Switch(id),
                    "close" => Tab::Close(id),
                    "new" => Tab::New,
                    _ => return Err(malformed("tab.action must be switch, close or new")),
                })
            }
            Kind::Resize => {
                let side = |k: &str| {
                    m[k].as_u64()
                        .ok_or_else(|| Malformed(format!("resize.{k}")))
                };
                Message::Resize {
                    width: side("width")?,
                    height: side("height")?,
                }
            }
            Kind::Rtt => Message::Rtt(num(&m["ts"], 1e15).unwrap_or(0.0)),
            Kind::VideoPaused => Message::VideoPaused(
                m["paused"]
                    .as_bool()
                    .ok_or_else(|| malformed("video_paused.paused"))?,
            ),
            Kind::TabsCall => Message::TabsCall(tabs_call(m)?),
            Kind::TabsListen => {
                let events = m["events"]
                    .as_array()
                    .ok_or_else(|| malformed("tabs_listen.events"))?;
                let kinds = events
                    .iter()
                    .map(|e| e.as_str().and_then(EventKind::parse))
                    .collect::<Option<_>>()
                    .ok_or_else(|| malformed("tabs_listen.events: not a tabs event"))?;
                Message::TabsListen(kinds)
            }
        })
    }
}

fn mouse(m: &Value) -> Result<Mouse, Malformed> {
    let action = match m["type"].as_str().unwrap_or_default() {
        "mousePressed" => MouseAction::Pressed,
        "mouseReleased" => MouseAction::Released,
        "mouseMoved" => MouseAction::Moved,
        _ => {
            return Err(malformed(
                "mouse.type must be mousePressed, mouseReleased or mouseMoved",
            ))
        }
    };
    let (x, y) = position(m, "mouse")?;
    let button = match m["button"].as_str().unwrap_or("none") {
        "none" => None,
        "left" => Some(Button::Left),
        "middle" => Some(Button::Middle),
        "right" => Some(Button::Right),
        "back" => Some(Button::Back),
        "forward" => Some(Button::Forward),
        _ => return Err(malformed("mouse.button")),
    };
    let default_clicks = if action == MouseAction::Moved { 0 } else { 1 };
    Ok(Mouse {
        action,
        x,
        y,
        button,
        buttons: m["buttons"].as_u64().unwrap_or(0) & 0x1f,
        click_count: m["clickCount"].as_u64().unwrap_or(default_clicks).min(3),
        modifiers: Modifiers::of(m),
    })
}

fn key(m: &Value) -> Result<Key, Malformed> {
    let down = match m["type"].as_str().unwrap_or_default() {
        "keyDown" => true,
        "keyUp" => false,
        _ => return Err(malformed("key.type must be keyDown or keyUp")),
    };
    let key = str_field(m, "key", "key.key")?;
    let code = m["code"].as_str().unwrap_or_default();
    if key.len() > 32 || code.len() > 32 {
        return Err(malformed("key.key too long"));
    }
    Ok(Key {
        down,
        key: key.to_string(),
        code: code.to_string(),
        key_code: m["keyCode"].as_u64().unwrap_or(0).min(255),
        text: m["text"]
            .as_str()
            .filter(|t| down && t.chars().count() <= 2)
            .map(str::to_string),
        modifiers: Modifiers::of(m),
    })
}

fn tabs_call(m: &Value) -> Result<TabsCall, Malformed> {
    let i = m["i"].as_u64().ok_or_else(|| malformed("tabs_call.i"))?;
    let args = match &m["a"] {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        _ => return Err(malformed("tabs_call.a must be an array")),
    };
    let method = m["m"]
        .as_str()
        .and_then(Method::parse)
        .ok_or_else(|| format!("not a tabs method: {}", m["m"]));
    Ok(TabsCall { i, method, args })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(m: Value) -> Result<Message, Malformed> {
        Message::parse(Kind::of(&m)?, &m)
    }

    #[test]
    fn shortcuts() {
        assert_eq!(Modifiers(2).shortcut("a"), Some("selectAll"));
        assert_eq!(Modifiers(4).shortcut("A"), Some("selectAll"));
        assert_eq!(Modifiers(2 | 8).shortcut("z"), Some("redo"));
        assert_eq!(Modifiers(0).shortcut("a"), None);
        assert_eq!(Modifiers(8).shortcut("a"), None);
        assert_eq!(Modifiers(1 | 2).shortcut("c"), None);
    }

    #[test]
    fn messages_parse_with_bounds_and_defaults() {
        let m = parse(json!({"t": "mouse", "type": "mousePressed", "x": 1e9, "y": 3, "button": "right", "modifiers": 255, "clickCount": 9})).unwrap();
        assert_eq!(
            m,
            Message::Mouse(Mouse {
                action: MouseAction::Pressed,
                x: 1e5,
                y: 3.0,
                button: Some(Button::Right),
                buttons: 0,
                click_count: 3,
                modifiers: Modifiers(15),
            })
        );
        let k = parse(json!({"t": "key", "type": "keyUp", "key": "a", "text": "a"})).unwrap();
        assert!(matches!(
            k,
            Message::Key(Key {
                down: false,
                text: None,
                ..
            })
        ));
        assert_eq!(
            parse(json!({"t": "tabs_call", "i": 1, "m": "nope"})).unwrap(),
            Message::TabsCall(TabsCall {
                i: 1,
                method: Err("not a tabs method: \"nope\"".into()),
                args: vec![]
            })
        );
        assert_eq!(
            parse(json!({"t": "rtt"})).unwrap(),
            Message::Rtt(0.0),
            "a probe without its time is echoed with 0"
        );
    }

    #[test]
    fn malformed_messages_say_what() {
        for (m, why) in [
            (json!({"x": 1}), "message without `t`"),
            (json!({"t": "fly"}), "unknown message type `fly`"),
            (
                json!({"t": "mouse", "type": "mouseMoved", "x": "1", "y": 2}),
                "mouse.x",
            ),
            (
                json!({"t": "mouse", "type": "drag", "x": 1, "y": 2}),
                "mouse.type must be mousePressed, mouseReleased or mouseMoved",
            ),
            (
                json!({"t": "mouse", "type": "mouseMoved", "x": 1, "y": 2, "button": "fourth"}),
                "mouse.button",
            ),
            (
                json!({"t": "key", "type": "keyDown", "key": "x".repeat(33)}),
                "key.key too long",
            ),
            (
                json!({"t": "nav", "action": "up"}),
                "nav.action must be back, forward or reload",
            ),
            (json!({"t": "resize", "width": 800}), "resize.height"),
            (
                json!({"t": "tabs_call", "i": 1, "m": "query", "a": {}}),
                "tabs_call.a must be an array",
            ),
            (
                json!({"t": "tabs_listen", "events": ["onNothing"]}),
                "tabs_listen.events: not a tabs event",
            ),
        ] {
            assert_eq!(parse(m), Err(Malformed(why.into())));
        }
    }
}
