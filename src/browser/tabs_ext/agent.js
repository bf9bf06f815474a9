// profile-vault's tabs agent: Chrome's own tabs API for the daemon, which calls it through
// DevTools (Runtime.evaluate in this worker) and hears its events through a binding
// (`pvTabsEvent`, added by the daemon). No page can reach it: no content scripts, no
// externally_connectable, no web-accessible resources.
const METHODS = new Set([
  'query', 'get', 'create', 'update', 'remove', 'reload', 'goBack', 'goForward', 'duplicate',
  'discard', 'move', 'highlight', 'group', 'ungroup', 'getZoom', 'setZoom', 'getZoomSettings',
  'setZoomSettings', 'detectLanguage',
]);
const EVENTS = [
  'onActivated', 'onCreated', 'onHighlighted', 'onMoved', 'onRemoved', 'onReplaced',
  'onUpdated', 'onZoomChange',
];

// Calls chrome.tabs[method] with the JSON array `args`; resolves to its result (null for none).
globalThis.pvTabs = async (method, args) => {
  if (!METHODS.has(method)) throw new Error('not a tabs method: ' + method);
  const a = JSON.parse(args);
  if (!Array.isArray(a)) throw new Error('the arguments must be an array');
  if (method === 'remove') {
    // The browser keeps a tab: closing the last would leave nothing to show (or end it).
    const ids = new Set([a[0]].flat());
    const all = await chrome.tabs.query({});
    if (all.every((t) => ids.has(t.id))) throw new Error('the last tab cannot be closed');
  }
  // Some never settle (detectLanguage on a page that never finishes loading): a call that
  // takes too long is refused, below the daemon's own DevTools timeout.
  let timer;
  const late = new Promise((_, no) => {
    timer = setTimeout(() => no(new Error('Chrome did not complete tabs.' + method + ' within 5 s (is the page still loading?)')), 5000);
  });
  try {
    const r = await Promise.race([chrome.tabs[method](...a), late]);
    return r === undefined ? null : r;
  } finally {
    clearTimeout(timer);
  }
};

function emit(m) {
  const b = globalThis.pvTabsEvent;
  if (typeof b === 'function') b(JSON.stringify(m));
}

for (const e of EVENTS) {
  chrome.tabs[e].addListener((...a) => {
    emit({ e, a });
    // The daemon's view follows the active tab: it knows tabs by DevTools target id.
    if (e === 'onActivated') {
      chrome.debugger.getTargets().then((ts) => {
        const t = ts.find((x) => x.tabId === a[0].tabId);
        if (t) emit({ activated: t.id });
      }, () => {});
    }
  });
}
