//! Admission of a viewer to a session's live view: the auth webhook's verdict on the
//! viewer's first message (when the session has one), the viewer-count limits, joining as a
//! user (or coming back as one), and the shared DevTools connection started for it.

use super::*;

/// The first message of a viewer of a session with an auth webhook: `{"t": "auth",
/// "userdata"}` (the app's `webhookUserdata`, or null), within 10 s.
async fn auth_message(rx: &mut futures_util::stream::SplitStream<WebSocket>) -> Option<Value> {
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), rx.next()).await;
    let Ok(Some(Ok(Message::Text(t)))) = first else {
        return None;
    };
    let m: Value = serde_json::from_str(t.as_str()).ok()?;
    (crate::live::protocol::Kind::of(&m) == Ok(crate::live::protocol::Kind::Auth))
        .then(|| m["userdata"].clone())
}

/// Asks the session's auth webhook whether the user `id` may join (Hyperbeam's webhook
/// authentication: `{user_id, userdata}` with `HB-User-Agent`; a 200 with
/// `{"authorized": true}` admits). Its `permissions` (or null) when it does.
async fn admitted(
    s: &Session,
    hook: &crate::session::webhook::Webhook,
    id: &str,
    userdata: Value,
    user_agent: &str,
    policy: &Arc<crate::browser::egress::Policy>,
) -> Option<Value> {
    let body = json!({"user_id": id, "userdata": userdata});
    let answer =
        crate::session::webhook::post(hook, &body, &[("hb-user-agent", user_agent)], policy).await;
    let verdict = match &answer {
        Ok((200, b)) => serde_json::from_slice::<Value>(b).ok(),
        _ => None,
    };
    let Some(v) = verdict.filter(|v| v["authorized"] == true) else {
        match answer {
            Ok((status, _)) => {
                tracing::info!(session = %s.id, user = %id, status, "the auth webhook did not admit a viewer")
            }
            Err(e) => {
                tracing::warn!(session = %s.id, user = %id, error = %e, "the auth webhook could not be asked; the viewer is not admitted")
            }
        }
        return None;
    };
    Some(v["permissions"].clone())
}

/// Lets the viewer in, or closes its socket saying why: the tenant's viewer cap, the auth
/// webhook (its `{"t": "auth"}` message first), the session's viewer cap, the screencast.
pub(super) async fn admit(
    s: &Arc<Session>,
    roles: BTreeSet<Role>,
    caller: &Caller,
    policy: &Arc<crate::browser::egress::Policy>,
    tx: &mut Tx,
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
) -> Option<(
    Arc<crate::live::User>,
    tokio::sync::mpsc::Receiver<crate::live::Notice>,
)> {
    let live = &s.live;
    if let Some(max) = caller.tenant_full {
        refuse(tx, rx, 4008, &format!("this tenant has the most viewers it may have on this node (live.max_viewers_per_tenant = {max})")).await;
        return None;
    }
    // With an auth webhook, the app's userdata comes first; the webhook decides below.
    let userdata = match &s.auth {
        Some(_) => {
            let Some(u) = auth_message(rx).await else {
                close(
                    tx,
                    1008,
                    "unauthorized: the first message must be {\"t\": \"auth\"}",
                )
                .await;
                return None;
            };
            Some(u)
        }
        None => None,
    };
    // The webhook decides before the user joins (it holds no slot, is listed nowhere and
    // sends no input meanwhile); a few admissions at a time per session.
    let resume = caller.resume.as_deref();
    let id = live.pending_id(&caller.token, resume);
    let mut granted = None;
    if let (Some(hook), Some(userdata)) = (&s.auth, userdata) {
        let Some(_slot) = live.admitting() else {
            refuse(
                tx,
                rx,
                1013,
                "too many viewers are being admitted; try again",
            )
            .await;
            return None;
        };
        match admitted(s, hook, &id, userdata, &caller.user_agent, policy).await {
            Some(p) => granted = Some(p),
            None => {
                refuse(tx, rx, 1008, "unauthorized").await;
                return None;
            }
        }
    }
    let (user, notices) = match live.join_as(&caller.token, roles, resume, Some(id)) {
        Ok(u) => u,
        Err(e) => {
            refuse(tx, rx, 4008, &e.to_string()).await;
            return None;
        }
    };
    if let Some(p) = granted {
        live.set_permissions_json(&user.id, &p);
    }
    if let Err(e) = live.hub.join().await {
        tracing::warn!(session = %s.id, error = %e, "live view: cannot start the screencast");
        live.leave(&user);
        close(tx, 4011, "the browser does not answer").await;
        return None;
    }
    Some((user, notices))
}
