// The live view as an ES module for the @hyperbeam/web SDK: `Hyperbeam(container, embed_url)`
// fetches embed_url, imports this, and calls `default(shadowRoot, url, send, options)`.
// It speaks the daemon's viewer socket (the embed page's wire: JSON messages, JPEG frames and
// display tiles, sound) and the SDK's messages (`connection`, `resize`, `rtt`,
// `connection_state`, `disconnect`, `close_warning`, `peer_mouse`, `blur`, answers to calls,
// tabs events). Self-contained: the SDK imports it from a `blob:`
// URL, so every server address is derived from `url`. No inline styles, no data: images, no
// workers, no eval: it runs under a host page's strict CSP.
export default function profileVault(root, url, send, opts) {
  opts = opts || {};
  const page = new URL(url);
  const token = page.searchParams.get('token') || '';
  const socketUrl = new URL(page.pathname.replace(/\/+$/, '') + '/socket', page);
  socketUrl.protocol = page.protocol === 'https:' ? 'wss:' : 'ws:';
  socketUrl.search = '?token=' + encodeURIComponent(token);

  // ---------- the picture: frames drawn on a canvas, shown by a <video> (apps read it) ----------
  root.replaceChildren();
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d');
  const video = document.createElement('video');
  video.id = 'vid';
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  video.tabIndex = -1;
  Object.assign(video.style, {
    width: '100%', height: '100%', display: 'block', objectFit: 'contain', background: '#000',
    outline: 'none',
  });
  const stream = canvas.captureStream ? canvas.captureStream() : null;
  if (stream) video.srcObject = stream;
  root.append(video);
  if (opts.videoTrackCb && stream) queueMicrotask(() => opts.videoTrackCb(stream.getVideoTracks()[0]));

  let W = 0, H = 0, userId = null, roles = [], connected = false, closed = false, ended = false;
  let paused = false, warned = null, userdata = null;
  let ws = null, backoff = 500, retry = 0;
  let tiles = Promise.resolve();
  const disabled = () => !!opts.disableInput;

  // A display sends several tiles a frame: the picture is handed on once they are drawn.
  let frameQueued = false;
  function frameDone() {
    if (frameQueued) return;
    frameQueued = true;
    setTimeout(() => {
      frameQueued = false;
      if (closed) return;
      if (opts.frameCb) createImageBitmap(canvas).then((b) => opts.frameCb(b), () => {});
      const track = stream && stream.getVideoTracks()[0];
      if (track && track.requestFrame) track.requestFrame();
    }, 0);
  }
  function decode(bytes) {
    return createImageBitmap(new Blob([bytes], { type: 'image/jpeg' }));
  }
  function onBinary(data) {
    const u8 = new Uint8Array(data);
    if (u8[0] === 0xff) {
      // A whole frame of the page-only view.
      tiles = tiles.then(() => decode(u8)).then((b) => {
        if (canvas.width !== b.width || canvas.height !== b.height) {
          canvas.width = b.width; canvas.height = b.height;
        }
        ctx.drawImage(b, 0, 0, canvas.width, canvas.height);
        b.close();
        frameDone();
      }, () => {});
    } else if (u8[0] === 1) {
      // A tile of the display: 0x01, x, y (u16 BE), JPEG.
      const v = new DataView(data);
      const x = v.getUint16(1), y = v.getUint16(3);
      const bmp = decode(u8.subarray(5));
      tiles = tiles.then(() => bmp).then((b) => {
        if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
        ctx.drawImage(b, x, y);
        b.close();
        frameDone();
      }, () => {});
    }
    else if (u8[0] === 2) onAudio(u8);
  }

  // ---------- sound: 0x02, then 20 ms of stereo at 24 kHz, one G.711 µ-law byte a sample ----------
  // Into an audio track (the video's stream has it, `audioTrackCb` gets it); played here only
  // when the app did not ask for the track. Browsers start it suspended until a gesture.
  const RATE = 24000, MULAW = new Float32Array(256);
  for (let i = 0; i < 256; i++) {
    const u = ~i & 0xff, t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
    MULAW[i] = ((u & 0x80) ? 0x84 - t : t - 0x84) / 32768;
  }
  let actx = null, gain = null, playAt = 0;
  let volume = Math.min(Math.max(opts.volume === undefined ? 1 : Number(opts.volume) || 0, 0), 1);
  try {
    actx = new AudioContext();
    gain = actx.createGain();
    gain.gain.value = volume;
    const dest = actx.createMediaStreamDestination();
    gain.connect(dest);
    if (!opts.audioTrackCb) gain.connect(actx.destination);
    const track = dest.stream.getAudioTracks()[0];
    if (stream && track) stream.addTrack(track);
    if (opts.audioTrackCb && track) queueMicrotask(() => opts.audioTrackCb(track));
    actx.resume().catch(() => {});
  } catch (_) { actx = null; }
  const wake = () => { if (actx && actx.state === 'suspended') actx.resume().catch(() => {}); };
  function onAudio(b) {
    if (!actx || actx.state !== 'running') return;
    const n = (b.length - 1) >> 1;
    const buf = actx.createBuffer(2, n, RATE);
    const L = buf.getChannelData(0), R = buf.getChannelData(1);
    for (let i = 0; i < n; i++) { L[i] = MULAW[b[1 + 2 * i]]; R[i] = MULAW[b[2 + 2 * i]]; }
    const src = actx.createBufferSource();
    src.buffer = buf;
    src.connect(gain);
    const now = actx.currentTime;
    // A small jitter buffer; start over when the stream fell behind or ran far ahead.
    if (playAt < now + 0.02 || playAt > now + 0.5) playAt = now + 0.08;
    src.start(playAt);
    playAt += n / RATE;
  }

  const REASONS = { client: 'request', admin: 'request', inactive: 'inactive', absolute: 'absolute', kicked: 'kicked' };
  function onText(m) {
    switch (m.t) {
      case 'hello':
        // The same user after a reconnect: the daemon gives its id back for this secret.
        if (userId === null) userId = m.user_id;
        if (m.resume) socketUrl.searchParams.set('resume', m.resume);
        roles = m.roles || [];
        break;
      case 'meta':
        W = m.width | 0; H = m.height | 0;
        if (!connected) {
          connected = true;
          send({ type: 'connection', data: { width: W, height: H, user_id: userId, max_area: 3840 * 2160 } });
          video.play().catch(() => {});
        } else {
          send({ type: 'resize', data: { width: W, height: H } });
        }
        send({ type: 'connection_state', data: { state: 'playing' } });
        break;
      case 'roles':
        roles = m.roles || roles;
        break;
      case 'cursor': {
        // Another user's pointer (this user has `cursor_data`): as the SDK's `onCursor` gets
        // it, 0-1 of the screen and this page's own coordinates.
        const r = video.getBoundingClientRect();
        if (!W || !H || !r.width) break;
        const s = Math.min(r.width / W, r.height / H);
        const ox = r.left + (r.width - W * s) / 2, oy = r.top + (r.height - H * s) / 2;
        send({ type: 'peer_mouse', data: { x: m.x / W, y: m.y / H, clientX: ox + m.x * s, clientY: oy + m.y * s, userId: m.user_id } });
        break;
      }
      case 'tabs_result': {
        const i = tabCalls.get(m.i);
        tabCalls.delete(m.i);
        if (i !== undefined) reply(i, m.r === undefined ? null : m.r, m.e);
        break;
      }
      case 'tabs_event':
        // Every listener of that event hears it (after its own ack: replies keep their order).
        for (const [i, e] of tabListeners) if (e === m.e) reply(i, m.a);
        break;
      case 'rtt':
        if (typeof m.ts === 'number') send({ type: 'rtt', data: Math.max(0, Math.round(performance.now() - m.ts)) });
        break;
      case 'close_warning':
        // A timeout ahead (`delay_ms` left), or `type: null` once activity moved it away.
        if (m.type) {
          warned = m.type;
          send({ type: 'close_warning', data: { type: m.type, deadline: { delay: m.delay_ms, closeDate: new Date(Date.now() + m.delay_ms).toISOString() } } });
        } else if (warned) {
          send({ type: 'close_warning', data: { type: warned, deadline: null } });
          warned = null;
        }
        break;
      case 'ended':
        ended = true;
        send({ type: 'disconnect', data: { type: REASONS[m.reason] || 'unknown' } });
        break;
    }
  }

  function connect() {
    if (closed) return;
    send({ type: 'connection_state', data: { state: connected ? 'reconnecting' : 'connecting' } });
    ws = new WebSocket(socketUrl);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      // First: a session with an auth webhook admits no one before this.
      ws.send(JSON.stringify({ t: 'auth', userdata }));
      backoff = 500;
      // A new socket starts with no listeners: say again which tabs events are wanted.
      if (tabListeners.size) listenTabs();
      if (paused) out({ t: 'video_paused', paused: true });
      probe();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') {
        try { onText(JSON.parse(ev.data)); } catch (_) { /* not ours */ }
      } else {
        onBinary(ev.data);
      }
    };
    ws.onclose = (ev) => {
      ws = null;
      for (const i of tabCalls.values()) reply(i, undefined, 'the connection to the session was lost');
      tabCalls.clear();
      if (closed || ended) return;
      if (ev.code === 4001 || ev.code === 1008) {
        ended = true;
        send({ type: 'disconnect', data: { type: ev.code === 1008 ? 'unauthorized' : 'unknown' } });
        return;
      }
      retry = setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 8000);
    };
  }
  const out = (m) => { if (ws && ws.readyState === 1) ws.send(JSON.stringify(m)); };
  // The round trip (`hb.rtt`), measured every few seconds; not activity on the server.
  const probe = () => out({ t: 'rtt', ts: performance.now() });
  const rttTimer = setInterval(probe, 5000);
  setTimeout(connect, 0);

  // ---------- input: mouse and wheel on the video, keys from the window ----------
  const mods = (e) => (e.altKey ? 1 : 0) | (e.ctrlKey ? 2 : 0) | (e.metaKey ? 4 : 0) | (e.shiftKey ? 8 : 0);
  const BUTTONS = ['left', 'middle', 'right', 'back', 'forward'];
  function toRemote(e) {
    const r = video.getBoundingClientRect();
    if (!W || !H || !r.width || !r.height) return null;
    const s = Math.min(r.width / W, r.height / H);
    const ox = r.left + (r.width - W * s) / 2, oy = r.top + (r.height - H * s) / 2;
    const x = (e.clientX - ox) / s, y = (e.clientY - oy) / s;
    if (x < 0 || y < 0 || x >= W || y >= H) return null;
    return { x: Math.round(x), y: Math.round(y) };
  }
  function mouse(type, e, button, clickCount) {
    const p = toRemote(e);
    if (p) out({ t: 'mouse', type, x: p.x, y: p.y, button, buttons: e.buttons, clickCount, modifiers: mods(e) });
  }
  const listeners = [];
  const on = (target, name, fn, o) => { target.addEventListener(name, fn, o); listeners.push([target, name, fn, o]); };
  on(video, 'mousedown', (e) => {
    e.preventDefault();
    wake();
    send({ type: 'blur' });
    if (!disabled() && BUTTONS[e.button]) mouse('mousePressed', e, BUTTONS[e.button], e.detail || 1);
  });
  on(video, 'mouseup', (e) => {
    if (!disabled() && BUTTONS[e.button]) mouse('mouseReleased', e, BUTTONS[e.button], e.detail || 1);
  });
  on(video, 'mousemove', (e) => { if (!disabled()) mouse('mouseMoved', e, 'none', 0); });
  on(video, 'contextmenu', (e) => e.preventDefault());
  on(video, 'wheel', (e) => {
    e.preventDefault();
    const p = toRemote(e);
    if (!p || disabled()) return;
    const k = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? H || 800 : 1;
    out({ t: 'wheel', x: p.x, y: p.y, deltaX: e.deltaX * k, deltaY: e.deltaY * k, modifiers: mods(e) });
  }, { passive: false });
  const typing = () => {
    const a = document.activeElement;
    return a && (a.tagName === 'INPUT' || a.tagName === 'TEXTAREA' || a.isContentEditable);
  };
  function key(type, e) {
    if (disabled() || opts.delegateKeyboard === false || typing()) return;
    wake();
    const m = { t: 'key', type, key: e.key, code: e.code, keyCode: e.keyCode, modifiers: mods(e) };
    if (type === 'keyDown') {
      if (e.key === 'Enter') m.text = '\r';
      else if ([...e.key].length === 1 && !(e.ctrlKey || e.metaKey)) m.text = e.key;
    }
    e.preventDefault();
    out(m);
  }
  on(window, 'keydown', (e) => key('keyDown', e));
  on(window, 'keyup', (e) => key('keyUp', e));

  // The SDK's sendEvent: input the app makes itself (it goes even with disableInput).
  // Keys as `{type: "keydown" | "keyup", key, ctrlKey?, metaKey?}`; the pointer at 0-1 of the
  // screen; the wheel where the pointer last was.
  let lastX = 0, lastY = 0;
  function sendEvent(ev) {
    const ty = ev.type;
    const m = (ev.altKey ? 1 : 0) | (ev.ctrlKey ? 2 : 0) | (ev.metaKey ? 4 : 0) | (ev.shiftKey ? 8 : 0);
    if (ty === 'keydown' || ty === 'keyup') {
      const k = typeof ev.key === 'string' ? ev.key : '';
      if (!k) return;
      const msg = { t: 'key', type: ty === 'keydown' ? 'keyDown' : 'keyUp', key: k, code: '', modifiers: m };
      if (ty === 'keydown') {
        if (k === 'Enter') msg.text = '\r';
        else if ([...k].length === 1 && !(ev.ctrlKey || ev.metaKey)) msg.text = k;
      }
      out(msg);
    } else if (ty === 'mousedown' || ty === 'mouseup' || ty === 'mousemove') {
      if (!W || !H) return;
      const at = (v, n) => Math.round(Math.min(Math.max(Number(v) || 0, 0), 1) * (n - 1));
      lastX = at(ev.x, W);
      lastY = at(ev.y, H);
      const type = ty === 'mousedown' ? 'mousePressed' : ty === 'mouseup' ? 'mouseReleased' : 'mouseMoved';
      const button = ty === 'mousemove' ? 'none' : BUTTONS[ev.button | 0] || 'left';
      out({ t: 'mouse', type, x: lastX, y: lastY, button, buttons: ty === 'mousedown' ? 1 : 0, clickCount: ty === 'mousemove' ? 0 : 1, modifiers: m });
    } else if (ty === 'wheel') {
      out({ t: 'wheel', x: lastX, y: lastY, deltaX: Number(ev.deltaX) || 0, deltaY: Number(ev.deltaY) || 0, modifiers: m });
    }
  }

  // ---------- the SDK's calls and messages ----------
  const base = page.origin + page.pathname.replace(/\/+$/, '');
  const ADMIN = new Set(['setPermissions', 'addRoles', 'removeRoles']);
  function reply(i, r, e) { if (i !== undefined) setTimeout(() => send(e ? { i, e } : { i, r }), 0); }
  function handleMessage(msg) {
    if (!msg || typeof msg !== 'object') return;
    if ('m' in msg) {
      const a = Array.isArray(msg.a) ? msg.a : [];
      if (msg.m === 'resize') {
        if (!roles.includes('resize')) return reply(msg.i, undefined, 'this user may not resize (role `resize`)');
        out({ t: 'resize', width: a[0] | 0, height: a[1] | 0 });
        return reply(msg.i, true);
      }
      if (ADMIN.has(msg.m)) {
        // The same call as REST, `POST <base_url>/<method>` with the admin token (CORS).
        if (!msg.t) return reply(msg.i, undefined, 'Admin token not set');
        // Optional arguments left out are not sent (JSON would make them null).
        while (a.length && a[a.length - 1] === undefined) a.pop();
        fetch(base + '/' + msg.m, {
          method: 'POST',
          headers: { authorization: 'Bearer ' + msg.t, 'content-type': 'application/json' },
          body: JSON.stringify(a),
        }).then(async (r) => {
          const body = await r.json().catch(() => null);
          if (r.ok) reply(msg.i, body);
          else reply(msg.i, undefined, (body && body.message) || 'HTTP ' + r.status);
        }, (e) => reply(msg.i, undefined, String(e)));
        return;
      }
      if (msg.m.startsWith('tabs.')) return tabs(msg, a);
      return reply(msg.i, undefined, 'not supported by profile-vault yet: ' + msg.m);
    }
    switch (msg.type) {
      case 'webhook_auth': userdata = (msg.data && msg.data.webhookUserdata) || null; break;
      case 'ping': out({ t: 'ping' }); break;
      case 'keydown': case 'keyup': case 'mousedown': case 'mouseup': case 'mousemove': case 'wheel':
        sendEvent(msg);
        break;
      case 'reconnect': if (ws) ws.close(); break;
      case 'disable_input': opts.disableInput = !!msg.data; break;
      case 'delegate_keyboard': opts.delegateKeyboard = !!msg.data; break;
      case 'video_paused': paused = !!msg.data; out({ t: 'video_paused', paused }); break;
      case 'volume':
        volume = Math.min(Math.max(Number(msg.data) || 0, 0), 1);
        if (gain) gain.gain.value = volume;
        break;
    }
  }

  // Chrome's tabs API (role `chrome_apis`), over the socket: `tabs.<method>` calls are
  // answered by the daemon from Chrome itself; listeners get the events they added.
  let tabSeq = 0;
  const tabCalls = new Map(); // our call id -> the SDK's
  const tabListeners = new Map(); // the SDK's listener id -> event name
  function listenTabs() { out({ t: 'tabs_listen', events: [...new Set(tabListeners.values())] }); }
  function tabs(msg, a) {
    const [, name, verb] = msg.m.split('.');
    if (verb === 'addListener') {
      tabListeners.set(msg.i, name);
      reply(msg.i, undefined);
      return listenTabs();
    }
    if (verb === 'removeListener') {
      tabListeners.delete(a[0]);
      reply(msg.i, undefined);
      return listenTabs();
    }
    if (!ws || ws.readyState !== 1) return reply(msg.i, undefined, 'not connected to the session');
    while (a.length && a[a.length - 1] === undefined) a.pop();
    const c = ++tabSeq;
    tabCalls.set(c, msg.i);
    out({ t: 'tabs_call', i: c, m: name, a });
  }

  function destroy() {
    closed = true;
    clearTimeout(retry);
    clearInterval(rttTimer);
    if (actx) actx.close().catch(() => {});
    if (ws) { try { ws.close(1000); } catch (_) { /* closing */ } }
    for (const [t, n, f, o] of listeners) t.removeEventListener(n, f, o);
    listeners.length = 0;
    if (stream) for (const t of stream.getTracks()) t.stop();
    video.srcObject = null;
    root.replaceChildren();
  }

  return { handleMessage, destroy };
}
