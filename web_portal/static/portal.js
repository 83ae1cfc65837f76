/*
 * Switchboard visitor portal: pre-chat form and live chat with an advisor.
 *
 * Plain browser JavaScript, no build step, no dependencies. Loaded with `defer` from
 * portal.html under a strict Content-Security-Policy (no inline script or style).
 *
 * Security rule for this file: text that comes from the server (names, message bodies, error
 * messages) is only ever put into the page with textContent / createTextNode, never innerHTML.
 */
(function () {
  'use strict';

  /* ------------------------------------------------------------------------------------------
   * User-visible strings (English). Placeholders look like {name}.
   * Elements in portal.html carry data-i18n / data-i18n-placeholder / data-i18n-aria-label
   * keys that point here, so translating this object translates the whole page.
   * ---------------------------------------------------------------------------------------- */
  const STRINGS = {
    headerTitle: '{org} support',
    unreadTitle: '({n}) {title}',

    statusForm: 'We’re here to help',
    statusConnecting: 'Connecting…',
    statusWaiting: 'You are number {n} in the queue',
    statusWaitingUnknown: 'You are in the queue',
    statusInviting: 'Connecting you with an advisor…',
    statusActive: 'You are chatting with {name}',
    statusActiveUnknown: 'You are chatting with an advisor',
    statusEnded: 'This chat has ended.',

    waitingReassure: 'An advisor will be with you shortly. You can keep typing; your messages will be waiting for them.',
    invitingHint: 'An advisor is about to join. You can keep typing.',

    formTitle: 'Chat with us',
    formIntro: 'Tell us a little about what you need and an advisor will join you here.',
    labelName: 'Name',
    labelEmail: 'Email',
    optional: '(optional)',
    hintEmail: 'Only used if we need to follow up with you.',
    labelTopic: 'Topic',
    topicPlaceholder: 'Choose a topic…',
    labelMessage: 'How can we help?',
    labelCallSign: 'Ask for an advisor or team',
    callSignPlaceholder: 'A subject or a name, e.g. billing',
    hintCallSign: 'Only advisors and teams available right now are listed.',
    callSignList: 'Available now',
    callSignFound: '{n} available now. Use the up and down arrow keys to choose, Enter to pick.',
    callSignNone: 'Nobody matching is available right now. You can leave this empty and start a chat anyway.',
    callSignTooFast: 'Too many searches. Wait a moment, then type again.',
    callSignFailed: 'The search did not work. Try again, or leave this empty.',
    askedFor: 'You asked for: {name}',
    callSignChange: 'Change',
    start: 'Start chat',
    starting: 'Starting…',

    errNameRequired: 'Please enter your name.',
    errEmailInvalid: 'Please enter a valid email address, or leave this empty.',
    errTopicRequired: 'Please choose a topic.',
    errMessageRequired: 'Please type your message.',
    errTooLong: 'Please use at most {max} characters (currently {n}).',
    charCount: '{n} / {max}',

    chatRegion: 'Chat',
    transcriptLabel: 'Conversation',
    composerLabel: 'Type your message',
    composerPlaceholder: 'Write a message…',
    composerHint: 'Enter to send, Shift+Enter for a new line',
    send: 'Send',
    you: 'You',
    advisorFallback: 'Advisor',
    read: 'Read',
    sending: 'Sending…',
    queued: 'Not sent yet. It will be sent when the connection is back.',
    notSent: 'Not sent.',
    notSentEnded: 'Not sent: this chat has ended.',
    errTooFast: 'You are sending messages too quickly. Wait a moment, then send again.',
    retry: 'Retry',
    typing: '{name} is typing…',
    edited: '(edited)',
    editedAt: 'Edited at {time}',
    quoteRemoved: 'This message was removed.',
    typingUnknown: 'Your advisor is typing…',

    endChat: 'End chat',
    endConfirmQuestion: 'End this chat?',
    endConfirmHint: 'You won’t be able to send more messages.',
    endConfirmYes: 'End chat',
    endConfirmNo: 'Keep chatting',
    ending: 'Ending…',
    ended: 'This chat has ended.',
    endedHint: 'Thank you for getting in touch. You can start a new chat at any time.',
    newChat: 'Start a new chat',

    reconnecting: 'Reconnecting…',
    dismiss: 'Dismiss',
    errGeneric: 'Something went wrong. Please try again.',
    errNetwork: 'We could not reach the server. Please check your connection and try again.',
    errLoad: 'We could not load your chat.',
    errEnd: 'We could not end the chat.',
    errRef: '(Reference: {ref})',
    sessionExpired: 'Your chat session has expired. Please start a new chat.'
  };

  /* Limits mirror the server's validation (bridge/validation.py). */
  const LIMITS = { name: 80, email: 254, message: 4000, search: 100 };
  const COUNT_FROM = 0.9; // show the character counter from 90 % of the limit
  const TYPING_THROTTLE_MS = 3000;
  const TYPING_IDLE_MS = 5000;
  const TYPING_DISPLAY_MS = 6000;
  const READ_DELAY_MS = 800; // batch read receipts: one request for a burst of replies
  const PING_MS = 25000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const HTTP_FALLBACK_AFTER = 3; // reconnect attempts before re-checking the chat over HTTP
  const REQUEST_TIMEOUT_MS = 20000;
  const ENDED_CLOSE_GRACE_MS = 2000;
  const OUTBOX_KEY = 'switchboard.portal.outbox.v1';
  const SEARCH_DEBOUNCE_MS = 250;
  const QUOTE_CHARS = 160; // of the answered message, in a reply's quote
  const CHAT_VIEWS = ['waiting', 'inviting', 'active', 'ended'];
  const SENDERS = ['visitor', 'advisor', 'system'];

  /* ------------------------------------------------------------------------------------------
   * Small helpers
   * ---------------------------------------------------------------------------------------- */
  function t(key, vars) {
    let s = Object.prototype.hasOwnProperty.call(STRINGS, key) ? STRINGS[key] : key;
    if (vars) {
      s = s.replace(/\{(\w+)\}/g, function (whole, name) {
        return Object.prototype.hasOwnProperty.call(vars, name) ? String(vars[name]) : whole;
      });
    }
    return s;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function pad2(n) {
    return (n < 10 ? '0' : '') + n;
  }

  function formatTime(ts) {
    const d = ts ? new Date(ts) : new Date();
    if (isNaN(d.getTime())) return '';
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes());
  }

  function toInt(v) {
    const n = Number(v);
    return Number.isFinite(n) ? n : 0;
  }

  function str(v) {
    return typeof v === 'string' && v !== '' ? v : null;
  }

  function uuid4() {
    const c = window.crypto;
    if (c && typeof c.randomUUID === 'function') {
      try { return c.randomUUID(); } catch (e) { /* insecure context: fall through */ }
    }
    const b = new Uint8Array(16);
    if (c && typeof c.getRandomValues === 'function') {
      c.getRandomValues(b);
    } else {
      for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join('');
    return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
  }

  /* Exponential backoff with jitter, always within [BACKOFF_MIN_MS, BACKOFF_MAX_MS]. */
  function backoff(attempt) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, Math.min(attempt, 16)));
    const jittered = base / 2 + Math.random() * (base / 2);
    return Math.round(Math.max(BACKOFF_MIN_MS, Math.min(BACKOFF_MAX_MS, jittered)));
  }

  /* Message text as the server will store it: CRLF → LF, no leading blank lines, no trailing space. */
  function normalizeBody(text) {
    return String(text || '').replace(/\r\n?/g, '\n').replace(/^\s*\n/, '').replace(/\s+$/, '');
  }

  /*
   * Put `text` into `node` as text, turning http(s) URLs into links. Every piece of text goes
   * through createTextNode / textContent; hrefs are parsed and only http: / https: are kept.
   */
  const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
  function setLinkedText(node, text) {
    text = text == null ? '' : String(text);
    node.textContent = '';
    let last = 0;
    let match;
    URL_RE.lastIndex = 0;
    while ((match = URL_RE.exec(text)) !== null) {
      let url = match[0];
      // Trailing punctuation is usually not part of the link; keep balanced closing brackets.
      for (;;) {
        const ch = url.charAt(url.length - 1);
        if ('.,;:!?*_~'.indexOf(ch) !== -1) {
          url = url.slice(0, -1);
        } else if (ch === ')' && url.split('(').length < url.split(')').length) {
          url = url.slice(0, -1);
        } else if (ch === ']' && url.split('[').length < url.split(']').length) {
          url = url.slice(0, -1);
        } else {
          break;
        }
      }
      URL_RE.lastIndex = match.index + Math.max(url.length, 1);
      let href = null;
      try {
        const parsed = new URL(url);
        if ((parsed.protocol === 'http:' || parsed.protocol === 'https:') && parsed.hostname) href = parsed.href;
      } catch (e) {
        href = null;
      }
      if (!href) continue;
      if (match.index > last) node.appendChild(document.createTextNode(text.slice(last, match.index)));
      const a = document.createElement('a');
      a.href = href;
      a.textContent = url;
      a.target = '_blank';
      a.rel = 'noopener noreferrer nofollow ugc';
      node.appendChild(a);
      last = match.index + url.length;
    }
    if (last < text.length) node.appendChild(document.createTextNode(text.slice(last)));
  }

  /* ------------------------------------------------------------------------------------------
   * HTTP API
   * ---------------------------------------------------------------------------------------- */
  function ApiError(info) {
    this.name = 'ApiError';
    this.status = info.status || 0;
    this.network = !!info.network;
    this.code = str(info.code);
    this.message = str(info.message) || '';
    this.ref = str(info.ref);
    this.field = str(info.field);
  }
  ApiError.prototype = Object.create(Error.prototype);
  ApiError.prototype.constructor = ApiError;

  function isRetryable(err) {
    return !!err && (err.network || err.status === 0 || err.status >= 500);
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute('content') || '' : '';
  }

  async function api(method, path, body, keepalive) {
    const headers = { Accept: 'application/json' };
    const init = { method: method, headers: headers, credentials: 'same-origin', cache: 'no-store' };
    if (keepalive) init.keepalive = true; // survives the page being closed
    if (method !== 'GET') {
      headers['Content-Type'] = 'application/json';
      headers['X-CSRF-Token'] = csrfToken();
      init.body = JSON.stringify(body === undefined ? {} : body);
    }
    let timer = null;
    if (typeof AbortController === 'function') {
      const controller = new AbortController();
      init.signal = controller.signal;
      timer = setTimeout(function () { controller.abort(); }, REQUEST_TIMEOUT_MS);
    }
    let res;
    let text;
    try {
      res = await fetch(path, init);
      text = res.status === 204 ? '' : await res.text();
    } catch (e) {
      throw new ApiError({ network: true });
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!res.ok) {
      const e = data && typeof data.error === 'object' && data.error ? data.error : {};
      throw new ApiError({ status: res.status, code: e.code, message: e.message, ref: e.ref, field: e.field });
    }
    return { status: res.status, data: data && typeof data === 'object' ? data : {} };
  }

  function errorText(err, fallbackKey) {
    if (err && err.network) return t('errNetwork');
    return (err && err.message) || t(fallbackKey || 'errGeneric');
  }

  function refText(err) {
    return err && err.ref ? t('errRef', { ref: err.ref }) : '';
  }

  /* ------------------------------------------------------------------------------------------
   * State
   * ---------------------------------------------------------------------------------------- */
  const el = {};
  const state = {
    view: 'loading',
    conversation: null,
    messages: new Map(), // seq -> { msg, node }
    lastSeq: 0, // highest seq we hold from any source
    syncSeq: 0, // highest seq received from an ordered full stream (GET history / websocket)
    outbox: [], // [{ clientId, body, createdAt, status: sending|queued|failed, error, node }]
    pumping: false,
    outboxTimer: null,
    outboxAttempt: 0,
    ws: null,
    wsTimer: null,
    wsAttempt: 0,
    pingTimer: null,
    closeTimer: null,
    typingTimer: null,
    myTyping: { active: false, lastSent: 0, idleTimer: null },
    submitting: false,
    ending: false,
    stickToBottom: true,
    readNode: null,
    readSent: 0, // highest advisor seq we told the server the visitor has seen
    readTimer: null,
    unread: 0,
    baseTitle: document.title,
    // the call-sign search box: the answer to the latest query, the option the arrow keys are
    // on, and the call sign picked ({ sign, name }); whom the open chat asked for comes with
    // the conversation (asked_for)
    search: { seq: 0, timer: null, results: [], active: -1 },
    chosen: null
  };

  function hasOpenConversation() {
    return !!state.conversation && state.conversation.status !== 'ended';
  }

  /* ------------------------------------------------------------------------------------------
   * Views and status
   * ---------------------------------------------------------------------------------------- */
  function setView(view) {
    const before = state.view;
    state.view = view;
    el.app.setAttribute('data-state', view);
    const inChat = CHAT_VIEWS.indexOf(view) !== -1;
    const open = inChat && view !== 'ended';

    el.viewConnecting.hidden = !(view === 'loading' || view === 'connecting');
    el.viewForm.hidden = view !== 'form';
    el.viewChat.hidden = !inChat;
    el.composerForm.hidden = !open;
    el.endedPanel.hidden = view !== 'ended';
    el.end.hidden = !open;
    if (!open) closeEndConfirm(false);
    el.notice.hidden = !(view === 'waiting' || view === 'inviting');
    el.noticeIconWait.hidden = view !== 'waiting';
    el.noticeIconInvite.hidden = view !== 'inviting';
    if (view === 'ended') hideTyping();
    renderStatus();

    // Keep keyboard focus somewhere sensible when the element that had it disappears.
    // (Not on first load: the page should not grab focus by itself.)
    if (before !== view && before !== 'loading') {
      const active = document.activeElement;
      const lost = !active || active === document.body || !isShown(active);
      if (lost) {
        if (view === 'connecting') focusQuietly(el.viewConnecting);
        else if (view === 'ended') focusQuietly(el.newChat);
        else if (open) focusQuietly(el.composer);
      }
    }
  }

  function isShown(node) {
    for (let n = node; n && n !== document.body; n = n.parentElement) {
      if (n.hidden) return false;
    }
    return true;
  }

  function focusQuietly(node) {
    if (!node) return;
    try { node.focus({ preventScroll: true }); } catch (e) { node.focus(); }
  }

  function statusText() {
    const c = state.conversation;
    switch (state.view) {
      case 'loading':
      case 'connecting':
        return t('statusConnecting');
      case 'form':
        return t('statusForm');
      case 'waiting':
        return c && toInt(c.queue_position) >= 1
          ? t('statusWaiting', { n: toInt(c.queue_position) })
          : t('statusWaitingUnknown');
      case 'inviting':
        return t('statusInviting');
      case 'active':
        return c && str(c.advisor_name)
          ? t('statusActive', { name: c.advisor_name })
          : t('statusActiveUnknown');
      case 'ended':
        return t('statusEnded');
      default:
        return '';
    }
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text; // unchanged text is not re-announced
  }

  function renderStatus() {
    const text = statusText();
    setText(el.status, text);
    if (state.view === 'waiting') {
      setText(el.noticeTitle, text);
      setText(el.noticeText, t('waitingReassure'));
    } else if (state.view === 'inviting') {
      setText(el.noticeTitle, text);
      setText(el.noticeText, t('invitingHint'));
    }
    const c = state.conversation;
    const asked = c && str(c.asked_for) ? c.asked_for : null;
    setText(el.noticeAsked, asked ? t('askedFor', { name: asked }) : '');
    el.noticeAsked.hidden = !asked;
  }

  /* ------------------------------------------------------------------------------------------
   * Banner and alerts
   * ---------------------------------------------------------------------------------------- */
  function showBanner() {
    el.banner.hidden = false;
  }

  function hideBanner() {
    el.banner.hidden = true;
  }

  function showAlert(message, ref) {
    el.alertMessage.textContent = message || t('errGeneric');
    el.alertRef.textContent = ref || '';
    el.alert.hidden = false;
  }

  function hideAlert() {
    el.alert.hidden = true;
    el.alertMessage.textContent = '';
    el.alertRef.textContent = '';
  }

  /* ------------------------------------------------------------------------------------------
   * Transcript rendering
   * ---------------------------------------------------------------------------------------- */

  /* Every message node has the same shape: author, bubble > body, foot > time (+ state). */
  function messageShell() {
    const node = make('div', 'msg');
    const author = make('p', 'msg-author');
    const bubble = make('div', 'msg-bubble');
    const body = make('p', 'msg-body');
    const foot = make('div', 'msg-foot');
    const time = make('time', 'msg-time');
    bubble.appendChild(body);
    foot.appendChild(time);
    node.appendChild(author);
    node.appendChild(bubble);
    node.appendChild(foot);
    return node;
  }

  function part(node, cls) {
    return node.querySelector(':scope > .' + cls + ', :scope > * > .' + cls);
  }

  function clearExtras(node) {
    const foot = part(node, 'msg-foot');
    Array.prototype.slice.call(foot.querySelectorAll('.msg-state')).forEach(function (n) { n.remove(); });
    const error = node.querySelector(':scope > .msg-error');
    if (error) error.remove();
  }

  function renderServerMessage(node, m) {
    const sender = SENDERS.indexOf(m.sender) !== -1 ? m.sender : 'system';
    const wasCont = node.classList.contains('msg--cont');
    node.className = 'msg msg--' + sender + (wasCont ? ' msg--cont' : '');
    node.setAttribute('data-sender', sender);
    node.setAttribute('data-seq', String(m.seq));
    if (str(m.id)) node.setAttribute('data-id', m.id);
    if (str(m.client_id)) node.setAttribute('data-client-id', m.client_id);
    node.removeAttribute('data-state');

    const author = part(node, 'msg-author');
    const authorText = sender === 'visitor' ? t('you') : sender === 'advisor' ? (str(m.author) || t('advisorFallback')) : '';
    setText(author, authorText);
    author.hidden = sender === 'system';
    author.classList.toggle('sr-only', sender === 'visitor');

    const body = part(node, 'msg-body');
    if (body.getAttribute('data-text') !== String(m.body)) {
      setLinkedText(body, m.body);
      body.setAttribute('data-text', String(m.body));
    }
    const time = part(node, 'msg-time');
    if (str(m.ts)) time.setAttribute('datetime', m.ts);
    setText(time, formatTime(m.ts));
    clearExtras(node);
    renderQuote(node, m);
    renderEdited(node, m);
    // removed in Matrix: gone from the page (the server keeps only that it was, and when)
    node.hidden = !!str(m.removed_at);
    node.classList.toggle('msg--removed', node.hidden);
  }

  /* A reply shows the message it answers as a quote, from the page's own copy of it. */
  function renderQuote(node, m) {
    const bubble = part(node, 'msg-bubble');
    let quote = bubble.querySelector(':scope > .msg-quote');
    const quoted = typeof m.reply_to === 'number' ? state.messages.get(m.reply_to) : null;
    if (!quoted) {
      if (quote) quote.remove();
      return;
    }
    if (!quote) {
      quote = make('blockquote', 'msg-quote');
      quote.appendChild(make('span', 'msg-quote-author'));
      quote.appendChild(make('span', 'msg-quote-text'));
      bubble.insertBefore(quote, bubble.firstChild);
    }
    const q = quoted.msg;
    const who = q.sender === 'visitor' ? t('you') : q.sender === 'advisor' ? (str(q.author) || t('advisorFallback')) : '';
    setText(quote.querySelector('.msg-quote-author'), who);
    const removed = !!str(q.removed_at);
    quote.classList.toggle('msg-quote--removed', removed);
    let text = removed ? t('quoteRemoved') : String(q.body || '');
    if (text.length > QUOTE_CHARS) text = text.slice(0, QUOTE_CHARS - 1) + '…';
    setText(quote.querySelector('.msg-quote-text'), text);
  }

  function renderEdited(node, m) {
    const foot = part(node, 'msg-foot');
    let mark = foot.querySelector('.msg-edited');
    if (!str(m.edited_at) || str(m.removed_at)) {
      if (mark) mark.remove();
      return;
    }
    if (!mark) {
      mark = make('span', 'msg-edited');
      part(node, 'msg-time').after(mark);
    }
    setText(mark, t('edited'));
    mark.title = t('editedAt', { time: formatTime(m.edited_at) });
  }

  /* Which of two states of a message is newer: a removal is final, a later edit wins. */
  function changeRank(m) {
    if (str(m.removed_at)) return '2' + m.removed_at;
    if (str(m.edited_at)) return '1' + m.edited_at;
    return '0';
  }

  /* A newer state of a message the page holds (an edit or removal): 'changed' if shown. */
  function updateServerMessage(entry, m) {
    const rank = changeRank(m);
    const shown = changeRank(entry.msg);
    if (rank < shown || (rank === shown && String(m.body) === String(entry.msg.body))) return '';
    entry.msg = m;
    renderServerMessage(entry.node, m);
    // replies quoting it follow its text (or its removal)
    state.messages.forEach(function (other) {
      if (other.msg.reply_to === m.seq) renderQuote(other.node, other.msg);
    });
    return 'changed';
  }

  function renderPending(item) {
    const node = item.node || (item.node = messageShell());
    node.className = 'msg msg--visitor msg--pending';
    node.setAttribute('data-sender', 'visitor');
    node.setAttribute('data-client-id', item.clientId);
    node.setAttribute('data-state', item.status);
    node.removeAttribute('data-seq');

    const author = part(node, 'msg-author');
    setText(author, t('you'));
    author.hidden = false;
    author.classList.add('sr-only');

    const body = part(node, 'msg-body');
    if (body.getAttribute('data-text') !== item.body) {
      setLinkedText(body, item.body);
      body.setAttribute('data-text', item.body);
    }
    const time = part(node, 'msg-time');
    time.setAttribute('datetime', item.createdAt);
    setText(time, formatTime(item.createdAt));

    clearExtras(node);
    const foot = part(node, 'msg-foot');
    if (item.status === 'sending') {
      foot.appendChild(make('span', 'msg-state', t('sending')));
    } else if (item.status === 'queued') {
      foot.appendChild(make('span', 'msg-state', t('queued')));
    } else if (item.status === 'failed') {
      const box = make('div', 'msg-error');
      const text = make('p', 'msg-error-text');
      text.appendChild(document.createTextNode(item.errorText || t('notSent')));
      if (item.errorRef) {
        text.appendChild(document.createTextNode(' '));
        text.appendChild(make('span', 'ref', item.errorRef));
      }
      box.appendChild(text);
      if (item.canRetry) {
        const retry = make('button', 'btn btn-link msg-retry', t('retry'));
        retry.type = 'button';
        retry.addEventListener('click', function () { retryItem(item); });
        box.appendChild(retry);
      }
      node.appendChild(box);
    }
    return node;
  }

  /* Place a node by seq; pending nodes (no seq yet) always stay after confirmed ones. */
  function placeNode(node, seq) {
    let ref = null;
    for (let c = el.transcript.lastElementChild; c; c = c.previousElementSibling) {
      if (c === node) continue;
      const s = c.hasAttribute('data-seq') ? toInt(c.getAttribute('data-seq')) : Infinity;
      if (s > seq) ref = c;
      else break;
    }
    if (node.parentNode !== el.transcript || node.nextElementSibling !== ref) {
      el.transcript.insertBefore(node, ref);
    }
  }

  /* Add one server message, or show a newer state of one the page holds: 'new', 'changed',
   * or '' (nothing to show). */
  function addServerMessage(m, fromStream) {
    if (!m || typeof m !== 'object' || !Number.isFinite(Number(m.seq))) return '';
    const seq = Number(m.seq);
    m.seq = seq;
    if (fromStream && seq > state.syncSeq) state.syncSeq = seq;
    if (seq > state.lastSeq) state.lastSeq = seq;
    const known = state.messages.get(seq);
    if (known) return updateServerMessage(known, m);

    let node = null;
    if (str(m.client_id)) {
      const item = findOutbox(m.client_id);
      if (item) {
        node = item.node;
        removeFromOutbox(item);
      }
    }
    if (!node) node = messageShell();
    const entry = { msg: m, node: node };
    state.messages.set(seq, entry);
    renderServerMessage(node, m);
    placeNode(node, seq);
    return 'new';
  }

  function mergeMessages(list, fromStream) {
    if (!Array.isArray(list)) return 0;
    const sorted = list.slice().sort(function (a, b) { return toInt(a && a.seq) - toInt(b && b.seq); });
    let added = 0;
    sorted.forEach(function (m) { if (addServerMessage(m, fromStream)) added++; });
    return added;
  }

  function updateGrouping() {
    let prev = null;
    for (let c = el.transcript.firstElementChild; c; c = c.nextElementSibling) {
      if (c.hidden) continue; // removed
      const sender = c.getAttribute('data-sender');
      const author = part(c, 'msg-author');
      const cont = !!prev && sender !== 'system' && prev.getAttribute('data-sender') === sender &&
        part(prev, 'msg-author').textContent === author.textContent;
      c.classList.toggle('msg--cont', cont);
      prev = c;
    }
  }

  function updateReadMark() {
    const upTo = state.conversation ? toInt(state.conversation.read_up_to) : 0;
    let target = null;
    if (upTo > 0) {
      for (let c = el.transcript.lastElementChild; c; c = c.previousElementSibling) {
        if (!c.hidden && c.getAttribute('data-sender') === 'visitor' && c.hasAttribute('data-seq') &&
            toInt(c.getAttribute('data-seq')) <= upTo) {
          target = c;
          break;
        }
      }
    }
    const current = state.readNode;
    if (current && target && current.parentNode === part(target, 'msg-foot')) return;
    if (current) {
      const owner = current.closest('.msg');
      if (owner) owner.removeAttribute('data-read');
      current.remove();
      state.readNode = null;
    }
    if (!target) return;
    const mark = make('span', 'msg-read', t('read'));
    part(target, 'msg-foot').appendChild(mark);
    target.setAttribute('data-read', 'true');
    state.readNode = mark;
  }

  function scrollToBottom() {
    el.transcript.scrollTop = el.transcript.scrollHeight;
    state.stickToBottom = true;
  }

  function afterTranscriptChange(scroll) {
    updateGrouping();
    updateReadMark();
    if (scroll) scrollToBottom();
    reportRead();
  }

  /* Tell the advisor (a read receipt in their Matrix client) what the visitor has seen. */
  function reportRead() {
    if (document.hidden || !hasOpenConversation() || state.readTimer) return;
    let upTo = 0;
    state.messages.forEach(function (entry, seq) {
      if (entry.msg.sender === 'advisor' && seq > upTo) upTo = seq;
    });
    if (upTo <= state.readSent) return;
    state.readTimer = setTimeout(function () {
      state.readTimer = null;
      api('POST', '/api/conversation/read', { up_to: upTo }).then(function () {
        if (upTo > state.readSent) state.readSent = upTo;
      }).catch(function () { /* best effort: the next message retries */ });
    }, READ_DELAY_MS);
  }

  function clearChat() {
    state.messages.clear();
    state.outbox = [];
    state.lastSeq = 0;
    state.syncSeq = 0;
    state.readNode = null;
    state.readSent = 0;
    el.transcript.textContent = '';
    hideTyping();
  }

  /* ------------------------------------------------------------------------------------------
   * Typing indicators
   * ---------------------------------------------------------------------------------------- */
  function showTyping(isTyping, name) {
    clearTimeout(state.typingTimer);
    state.typingTimer = null;
    if (!isTyping || !hasOpenConversation()) {
      hideTyping();
      return;
    }
    const who = str(name) || (state.conversation && str(state.conversation.advisor_name));
    setText(el.typingText, who ? t('typing', { name: who }) : t('typingUnknown'));
    el.typing.hidden = false;
    state.typingTimer = setTimeout(hideTyping, TYPING_DISPLAY_MS);
  }

  function hideTyping() {
    clearTimeout(state.typingTimer);
    state.typingTimer = null;
    el.typing.hidden = true;
    el.typingText.textContent = '';
  }

  function postTyping(value, keepalive) {
    if (!hasOpenConversation()) return;
    api('POST', '/api/conversation/typing', { typing: value }, keepalive).catch(function () { /* best effort */ });
  }

  function onComposerTyping() {
    const my = state.myTyping;
    if (!hasOpenConversation()) return;
    if (!el.composer.value.trim()) {
      stopTyping(true);
      return;
    }
    const now = Date.now();
    if (!my.active || now - my.lastSent >= TYPING_THROTTLE_MS) {
      my.active = true;
      my.lastSent = now;
      postTyping(true);
    }
    clearTimeout(my.idleTimer);
    my.idleTimer = setTimeout(function () { stopTyping(true); }, TYPING_IDLE_MS);
  }

  function stopTyping(notify) {
    const my = state.myTyping;
    clearTimeout(my.idleTimer);
    my.idleTimer = null;
    if (my.active) {
      my.active = false;
      my.lastSent = 0;
      if (notify) postTyping(false);
    }
  }

  /* ------------------------------------------------------------------------------------------
   * Outbox: messages the visitor sent that the server has not confirmed yet
   * ---------------------------------------------------------------------------------------- */
  function findOutbox(clientId) {
    for (let i = 0; i < state.outbox.length; i++) {
      if (state.outbox[i].clientId === clientId) return state.outbox[i];
    }
    return null;
  }

  function removeFromOutbox(item) {
    const i = state.outbox.indexOf(item);
    if (i !== -1) state.outbox.splice(i, 1);
    saveOutbox();
  }

  function saveOutbox() {
    try {
      const c = state.conversation;
      const items = state.outbox.filter(function (i) { return i.status !== 'failed'; });
      if (!c || c.status === 'ended' || !items.length) {
        window.sessionStorage.removeItem(OUTBOX_KEY);
        return;
      }
      window.sessionStorage.setItem(OUTBOX_KEY, JSON.stringify({
        conversationId: c.id,
        items: items.map(function (i) { return { clientId: i.clientId, body: i.body, createdAt: i.createdAt }; })
      }));
    } catch (e) { /* storage unavailable: the outbox just won't survive a reload */ }
  }

  /* After a reload, put back messages that were typed but never confirmed by the server. */
  function restoreOutbox() {
    let data = null;
    try { data = JSON.parse(window.sessionStorage.getItem(OUTBOX_KEY) || 'null'); } catch (e) { data = null; }
    const c = state.conversation;
    if (!data || !c || data.conversationId !== c.id || !Array.isArray(data.items) || c.status === 'ended') {
      saveOutbox();
      return;
    }
    const confirmed = new Set();
    state.messages.forEach(function (entry) { if (entry.msg.client_id) confirmed.add(entry.msg.client_id); });
    data.items.forEach(function (raw) {
      if (!raw || typeof raw.clientId !== 'string' || typeof raw.body !== 'string') return;
      if (confirmed.has(raw.clientId) || findOutbox(raw.clientId)) return;
      const item = {
        clientId: raw.clientId,
        body: raw.body,
        createdAt: str(raw.createdAt) || new Date().toISOString(),
        status: 'queued',
        node: null
      };
      state.outbox.push(item);
      el.transcript.appendChild(renderPending(item));
    });
    saveOutbox();
  }

  function setItemStatus(item, status, err) {
    item.status = status;
    if (status === 'failed') {
      item.errorText = err && err.ended ? t('notSentEnded') : t('notSent') + ' ' + errorText(err);
      item.errorRef = err && !err.ended ? refText(err) : '';
      item.canRetry = !(err && err.ended);
    }
    if (item.node) {
      renderPending(item);
      if (state.stickToBottom) scrollToBottom();
    }
  }

  function retryItem(item) {
    if (!hasOpenConversation() || state.outbox.indexOf(item) === -1) return;
    setItemStatus(item, 'sending');
    saveOutbox();
    pump();
    focusQuietly(el.composer);
  }

  function scheduleOutboxRetry() {
    if (state.outboxTimer) return;
    state.outboxTimer = setTimeout(function () {
      state.outboxTimer = null;
      pump();
    }, backoff(state.outboxAttempt++));
  }

  /* Send outbox items one at a time, oldest first, so the advisor sees them in order. */
  async function pump() {
    if (state.pumping) return;
    state.pumping = true;
    clearTimeout(state.outboxTimer);
    state.outboxTimer = null;
    try {
      for (;;) {
        if (!hasOpenConversation()) break;
        const conversationId = state.conversation.id;
        const item = state.outbox.find(function (i) { return i.status === 'sending' || i.status === 'queued'; });
        if (!item) break;
        if (item.status !== 'sending') setItemStatus(item, 'sending');
        let res;
        try {
          res = await api('POST', '/api/conversation/messages', { client_id: item.clientId, body: item.body });
        } catch (err) {
          if (state.outbox.indexOf(item) === -1) continue; // confirmed over the websocket meanwhile
          if (err.status === 401) { sessionGone(); break; }
          if (err.status === 429) { giveBack(item); break; }
          if (isRetryable(err)) {
            state.outbox.forEach(function (i) { if (i.status === 'sending') setItemStatus(i, 'queued'); });
            if (!state.ws) showBanner();
            scheduleOutboxRetry();
            break;
          }
          setItemStatus(item, 'failed', err);
          continue;
        }
        state.outboxAttempt = 0;
        if (!state.conversation || state.conversation.id !== conversationId) break;
        const m = res.data.message;
        if (m && Number.isFinite(Number(m.seq))) {
          addServerMessage(m, false);
        }
        if (state.outbox.indexOf(item) !== -1) {
          // No usable message in the reply: the server has it anyway; show it as sent.
          removeFromOutbox(item);
          clearExtras(item.node);
          item.node.classList.remove('msg--pending');
          item.node.removeAttribute('data-state');
        }
        afterTranscriptChange(state.stickToBottom);
      }
    } finally {
      state.pumping = false;
      saveOutbox();
    }
  }

  /* Over the visitor's message limit (429): the server stored nothing. This message and those
   * queued after it go back into the composer, with a notice, for the visitor to send again. */
  function giveBack(item) {
    const back = state.outbox.slice(state.outbox.indexOf(item)).filter(function (i) {
      return i === item || i.status === 'sending' || i.status === 'queued';
    });
    back.forEach(function (i) {
      state.outbox.splice(state.outbox.indexOf(i), 1);
      if (i.node) i.node.remove();
    });
    const texts = back.map(function (i) { return i.body; });
    if (el.composer.value.trim()) texts.push(el.composer.value);
    el.composer.value = texts.join('\n');
    autosize();
    updateCount(el.composer, el.composerCount);
    setComposerError(t('errTooFast'));
    saveOutbox();
  }

  function sendFromComposer() {
    const body = normalizeBody(el.composer.value);
    setComposerError('');
    if (!hasOpenConversation()) return;
    if (!body) {
      el.composer.focus();
      return;
    }
    if (body.length > LIMITS.message) {
      setComposerError(t('errTooLong', { max: LIMITS.message, n: body.length }));
      el.composer.focus();
      return;
    }
    const item = {
      clientId: uuid4(),
      body: body,
      createdAt: new Date().toISOString(),
      status: 'sending',
      node: null
    };
    state.outbox.push(item);
    el.transcript.appendChild(renderPending(item));
    el.composer.value = '';
    autosize();
    updateCount(el.composer, el.composerCount);
    stopTyping(true);
    saveOutbox();
    afterTranscriptChange(true);
    el.composer.focus();
    pump();
  }

  function setComposerError(text) {
    el.composerError.textContent = text;
    if (text) el.composer.setAttribute('aria-invalid', 'true');
    else el.composer.removeAttribute('aria-invalid');
  }

  /* ------------------------------------------------------------------------------------------
   * Websocket
   * ---------------------------------------------------------------------------------------- */
  function wsUrl() {
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host +
      '/api/ws?since=' + encodeURIComponent(String(state.syncSeq));
  }

  function connectWs() {
    clearTimeout(state.wsTimer);
    state.wsTimer = null;
    if (!hasOpenConversation() || state.ws) return;
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      onSocketDown();
      return;
    }
    state.ws = ws;
    let sawFrame = false;

    ws.addEventListener('open', function () {
      if (state.ws !== ws) return;
      hideBanner();
      startPing(ws);
      pump(); // connection is back: flush the outbox
    });
    ws.addEventListener('message', function (ev) {
      if (state.ws !== ws) return;
      if (!sawFrame) {
        sawFrame = true;
        state.wsAttempt = 0; // the server is really talking to us: reset the backoff
      }
      handleFrame(ev.data);
    });
    ws.addEventListener('close', function (ev) {
      if (state.ws !== ws) return;
      state.ws = null;
      stopPing();
      if (ev.code === 4401) {
        sessionGone();
        return;
      }
      onSocketDown();
    });
  }

  function onSocketDown() {
    if (!hasOpenConversation()) return;
    showBanner();
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (state.wsTimer || state.ws) return;
    state.wsTimer = setTimeout(reconnect, backoff(state.wsAttempt++));
  }

  async function reconnect() {
    state.wsTimer = null;
    if (!hasOpenConversation() || state.ws) return;
    if (state.wsAttempt >= HTTP_FALLBACK_AFTER) {
      // The socket keeps failing; ask over HTTP whether the chat is still there.
      try {
        const r = await api('GET', '/api/conversation?since=' + encodeURIComponent(String(state.syncSeq)));
        if (!r.data.conversation) {
          sessionGone();
          return;
        }
        if (state.conversation && r.data.conversation.id !== state.conversation.id) {
          await reload();
          return;
        }
        const added = mergeMessages(r.data.messages, true);
        applyConversation(r.data.conversation);
        if (added) afterTranscriptChange(true);
      } catch (err) {
        if (err.status === 401) {
          sessionGone();
          return;
        }
      }
      if (!hasOpenConversation() || state.ws || state.wsTimer) return;
    }
    connectWs();
  }

  function reconnectNow() {
    if (!hasOpenConversation() || state.ws) return;
    clearTimeout(state.wsTimer);
    state.wsTimer = null;
    state.wsAttempt = 0;
    connectWs();
  }

  function startPing(ws) {
    stopPing();
    state.pingTimer = setInterval(function () {
      if (ws.readyState === WebSocket.OPEN) {
        try { ws.send(JSON.stringify({ type: 'ping' })); } catch (e) { /* close event follows */ }
      }
    }, PING_MS);
  }

  function stopPing() {
    clearInterval(state.pingTimer);
    state.pingTimer = null;
  }

  function closeSocket() {
    const ws = state.ws;
    state.ws = null;
    stopPing();
    clearTimeout(state.wsTimer);
    state.wsTimer = null;
    clearTimeout(state.closeTimer);
    state.closeTimer = null;
    if (ws) {
      try { ws.close(1000); } catch (e) { /* already closed */ }
    }
  }

  function handleFrame(raw) {
    let frame;
    try { frame = JSON.parse(raw); } catch (e) { return; }
    if (!frame || typeof frame !== 'object') return;
    switch (frame.type) {
      case 'message': {
        const m = frame.message;
        const shown = addServerMessage(m, true);
        if (shown) {
          if (shown === 'new' && m.sender === 'advisor' && !str(m.removed_at)) {
            hideTyping();
            noteUnread();
          }
          afterTranscriptChange(true);
        }
        break;
      }
      case 'update': {
        // an edit or removal: a newer state of a message (held, or not yet arrived)
        if (addServerMessage(frame.message, false)) afterTranscriptChange(false);
        break;
      }
      case 'status':
        if (frame.conversation && typeof frame.conversation === 'object') applyConversation(frame.conversation);
        break;
      case 'typing':
        showTyping(frame.typing === true, frame.name);
        break;
      case 'read':
        if (state.conversation && Number.isFinite(Number(frame.up_to))) {
          state.conversation.read_up_to = Math.max(toInt(state.conversation.read_up_to), Number(frame.up_to));
          updateReadMark();
        }
        break;
      default:
        break; // pong and anything newer: ignore
    }
  }

  /* ------------------------------------------------------------------------------------------
   * Conversation lifecycle
   * ---------------------------------------------------------------------------------------- */
  function applyConversation(c) {
    if (!c || typeof c !== 'object') return;
    const prev = state.conversation;
    // statuses are pushed after their commit and may cross: never go back to an older one
    if (prev && prev.id === c.id && toInt(c.version) < toInt(prev.version)) return;
    if (prev && prev.id === c.id) {
      c.read_up_to = Math.max(toInt(prev.read_up_to), toInt(c.read_up_to));
    }
    state.conversation = c;
    const view = CHAT_VIEWS.indexOf(c.status) !== -1 ? c.status : 'waiting';
    setView(view);
    updateReadMark();
    if (view === 'ended') onEnded();
  }

  function onEnded() {
    hideBanner();
    hideTyping();
    stopTyping(false);
    clearTimeout(state.outboxTimer);
    state.outboxTimer = null;
    clearTimeout(state.wsTimer);
    state.wsTimer = null;
    state.outbox.forEach(function (item) {
      if (item.status !== 'failed' || item.canRetry) setItemStatus(item, 'failed', { ended: true });
    });
    saveOutbox();
    // Give the server a moment to deliver any final frames, then hang up.
    if (state.ws && !state.closeTimer) {
      state.closeTimer = setTimeout(function () {
        state.closeTimer = null;
        if (!hasOpenConversation()) closeSocket();
      }, ENDED_CLOSE_GRACE_MS);
    }
  }

  function loadConversation(conversation, messages) {
    if (state.conversation && state.conversation.id !== conversation.id) {
      closeSocket();
      clearChat();
    }
    el.transcript.setAttribute('aria-busy', 'true');
    applyConversation(conversation);
    mergeMessages(messages, true);
    restoreOutbox();
    el.transcript.removeAttribute('aria-busy');
    afterTranscriptChange(true);
    if (hasOpenConversation()) {
      connectWs();
      if (state.outbox.length) pump();
    }
  }

  async function reload() {
    closeSocket();
    clearChat();
    state.conversation = null;
    setView('loading');
    try {
      const r = await api('GET', '/api/conversation?since=0');
      if (r.data.conversation) loadConversation(r.data.conversation, r.data.messages);
      else showForm();
    } catch (err) {
      showForm();
      if (err.status !== 401) showAlert(t('errLoad') + ' ' + errorText(err), refText(err));
    }
  }

  function sessionGone() {
    closeSocket();
    clearTimeout(state.outboxTimer);
    state.outboxTimer = null;
    stopTyping(false);
    clearChat();
    state.conversation = null;
    try { window.sessionStorage.removeItem(OUTBOX_KEY); } catch (e) { /* ignore */ }
    hideBanner();
    showForm();
    showAlert(t('sessionExpired'), '');
  }

  function showForm() {
    setView('form');
  }

  function startNewChat() {
    const previous = state.conversation;
    closeSocket();
    clearTimeout(state.outboxTimer);
    state.outboxTimer = null;
    clearChat();
    state.conversation = null;
    hideAlert();
    hideBanner();
    clearFormErrors();
    el.message.value = '';
    updateCount(el.message, el.messageCount);
    clearChosen(false); // whoever it was may be away now: a new search shows who is not
    if (!el.name.value && previous && str(previous.visitor_name)) el.name.value = previous.visitor_name;
    showForm();
    focusQuietly(el.name.value ? el.message : el.name);
  }

  /* ------------------------------------------------------------------------------------------
   * Pre-chat form
   * ---------------------------------------------------------------------------------------- */
  const FIELDS = ['call_sign', 'name', 'email', 'topic', 'message'];
  const EMAIL_RE = /^[^@\s<>"'`]+@[^@\s<>"'`]+\.[^@\s<>"'`]+$/;

  function readForm() {
    return {
      name: el.name.value.replace(/\s+/g, ' ').trim(),
      email: el.email.value.trim(),
      topic: el.topic.value,
      message: normalizeBody(el.message.value),
      call_sign: state.chosen ? state.chosen.sign : ''
    };
  }

  function validateForm(v) {
    const errors = [];
    if (!v.name) errors.push(['name', t('errNameRequired')]);
    else if (v.name.length > LIMITS.name) errors.push(['name', t('errTooLong', { max: LIMITS.name, n: v.name.length })]);
    if (v.email) {
      if (v.email.length > LIMITS.email) errors.push(['email', t('errTooLong', { max: LIMITS.email, n: v.email.length })]);
      else if (!EMAIL_RE.test(v.email) || el.email.validity.typeMismatch) errors.push(['email', t('errEmailInvalid')]);
    }
    if (!v.topic) errors.push(['topic', t('errTopicRequired')]);
    if (!v.message) errors.push(['message', t('errMessageRequired')]);
    else if (v.message.length > LIMITS.message) errors.push(['message', t('errTooLong', { max: LIMITS.message, n: v.message.length })]);
    return errors;
  }

  function setFieldError(field, text) {
    const input = el[field];
    const out = byId(field + '-error');
    if (!input || !out) return false;
    out.textContent = text || '';
    if (text) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
    return true;
  }

  function clearFormErrors() {
    FIELDS.forEach(function (f) { setFieldError(f, ''); });
    el.formError.textContent = '';
  }

  function setStartBusy(busy) {
    el.start.disabled = busy;
    if (busy) el.start.setAttribute('aria-busy', 'true');
    else el.start.removeAttribute('aria-busy');
    setText(el.startLabel, t(busy ? 'starting' : 'start'));
  }

  async function onStart(ev) {
    ev.preventDefault();
    if (state.submitting) return;
    hideAlert();
    clearFormErrors();
    const values = readForm();
    const errors = validateForm(values);
    if (errors.length) {
      errors.forEach(function (e) { setFieldError(e[0], e[1]); });
      el[errors[0][0]].focus();
      return;
    }
    state.submitting = true;
    setStartBusy(true);
    setView('connecting');
    try {
      const form = {
        name: values.name,
        email: values.email,
        topic: values.topic,
        message: values.message
      };
      if (values.call_sign) form.call_sign = values.call_sign;
      const r = await api('POST', '/api/conversation', form);
      if (!r.data.conversation) throw new ApiError({ status: r.status });
      el.message.value = '';
      updateCount(el.message, el.messageCount);
      loadConversation(r.data.conversation, r.data.messages);
      if (hasOpenConversation()) focusQuietly(el.composer);
    } catch (err) {
      showForm();
      showFormError(err);
    } finally {
      state.submitting = false;
      setStartBusy(false);
    }
  }

  function showFormError(err) {
    const text = errorText(err);
    const ref = refText(err);
    // nobody behind the call sign is available any more: the box is back, to pick another
    if (err && err.field === 'call_sign') clearChosen(false);
    if (err && err.field && FIELDS.indexOf(err.field) !== -1 && setFieldError(err.field, ref ? text + ' ' + ref : text)) {
      el[err.field].focus();
      return;
    }
    el.formError.textContent = ref ? text + ' ' + ref : text;
    el.start.focus();
  }

  function updateCount(input, out) {
    const max = LIMITS.message;
    const n = input.value.length;
    if (n >= Math.floor(max * COUNT_FROM)) {
      out.hidden = false;
      setText(out, t('charCount', { n: n, max: max }));
      out.classList.toggle('count--over', n > max);
    } else {
      out.hidden = true;
    }
  }

  /* ------------------------------------------------------------------------------------------
   * Call-sign search: a combobox (ARIA 1.2) whose listbox shows the call signs someone can
   * answer now. Debounced; an answer to an older query than the latest is dropped. Every text
   * from the server goes in with textContent.
   * ---------------------------------------------------------------------------------------- */
  function isCallSign(c) {
    return !!c && typeof c === 'object' && str(c.sign) && typeof c.name === 'string';
  }

  function setSearchStatus(text, visible) {
    setText(el.callSignStatus, text || '');
    // counts are for screen readers; "nobody" and errors are for everyone
    el.callSignStatus.classList.toggle('sr-only', !visible);
  }

  function listOpen() {
    return !el.callSignList.hidden;
  }

  function openList() {
    el.callSignList.hidden = false;
    el.call_sign.setAttribute('aria-expanded', 'true');
  }

  function closeList() {
    el.callSignList.hidden = true;
    el.call_sign.setAttribute('aria-expanded', 'false');
    setActive(-1);
  }

  function setActive(i) {
    const options = el.callSignList.children;
    state.search.active = i;
    for (let k = 0; k < options.length; k++) {
      options[k].setAttribute('aria-selected', k === i ? 'true' : 'false');
    }
    if (i >= 0 && options[i]) {
      el.call_sign.setAttribute('aria-activedescendant', options[i].id);
      options[i].scrollIntoView({ block: 'nearest' });
    } else {
      el.call_sign.removeAttribute('aria-activedescendant');
    }
  }

  function renderResults() {
    const results = state.search.results;
    el.callSignList.textContent = '';
    results.forEach(function (c, i) {
      const option = make('li', 'combo-option');
      option.id = 'callsign-option-' + i;
      option.setAttribute('role', 'option');
      option.setAttribute('aria-selected', 'false');
      option.setAttribute('data-sign', c.sign);
      option.appendChild(make('span', 'combo-name', c.name || c.sign));
      option.appendChild(make('span', 'combo-sign', c.sign));
      if (str(c.keywords)) option.appendChild(make('span', 'combo-keywords', c.keywords));
      option.addEventListener('click', function () { choose(i); });
      el.callSignList.appendChild(option);
    });
    setActive(-1);
    if (results.length) {
      openList();
      setSearchStatus(t('callSignFound', { n: results.length }), false);
    } else {
      closeList();
      setSearchStatus(t('callSignNone'), true);
    }
  }

  function onSearchInput() {
    const search = state.search;
    const seq = ++search.seq; // what is on its way for an older text is dropped
    clearTimeout(search.timer);
    search.timer = null;
    if (el.call_sign.hasAttribute('aria-invalid')) setFieldError('call_sign', '');
    const query = el.call_sign.value.trim();
    if (!query) {
      search.results = [];
      el.callSignList.textContent = '';
      closeList();
      setSearchStatus('', false);
      return;
    }
    search.timer = setTimeout(function () {
      search.timer = null;
      runSearch(query, seq);
    }, SEARCH_DEBOUNCE_MS);
  }

  async function runSearch(query, seq) {
    let r;
    try {
      r = await api('GET', '/api/call-signs?q=' + encodeURIComponent(query.slice(0, LIMITS.search)));
    } catch (err) {
      if (seq !== state.search.seq) return;
      state.search.results = [];
      el.callSignList.textContent = '';
      closeList();
      setSearchStatus(err.status === 429 ? t('callSignTooFast') : t('callSignFailed'), true);
      return;
    }
    if (seq !== state.search.seq || state.chosen) return;
    const found = Array.isArray(r.data.call_signs) ? r.data.call_signs.filter(isCallSign) : [];
    state.search.results = found;
    renderResults();
  }

  function onSearchKey(ev) {
    const results = state.search.results;
    const n = results.length;
    const active = state.search.active;
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      if (!n) return;
      ev.preventDefault();
      if (!listOpen()) openList();
      if (ev.key === 'ArrowDown') setActive(active < 0 || active >= n - 1 ? 0 : active + 1);
      else setActive(active <= 0 ? n - 1 : active - 1);
    } else if (ev.key === 'Enter') {
      if (ev.isComposing || ev.keyCode === 229) return;
      ev.preventDefault(); // Enter in the search never sends the form
      if (listOpen() && active >= 0) choose(active);
      else if (n === 1) choose(0);
      else if (n) openList();
    } else if (ev.key === 'Escape') {
      if (listOpen()) {
        ev.preventDefault();
        closeList();
      } else if (el.call_sign.value) {
        ev.preventDefault();
        el.call_sign.value = '';
        onSearchInput();
      }
    }
  }

  function choose(i) {
    const c = state.search.results[i];
    if (!c) return;
    state.chosen = { sign: c.sign, name: c.name || c.sign };
    state.search.seq++;
    clearTimeout(state.search.timer);
    state.search.timer = null;
    state.search.results = [];
    el.callSignList.textContent = '';
    closeList();
    el.call_sign.value = '';
    setFieldError('call_sign', '');
    showChosen();
    setSearchStatus(t('askedFor', { name: state.chosen.name }), false);
    focusQuietly(el.callSignClear);
  }

  function showChosen() {
    const chosen = state.chosen;
    el.callSignCombo.hidden = !!chosen;
    el.callSignHint.hidden = !!chosen;
    el.callSignChosen.hidden = !chosen;
    setText(el.callSignChosenName, chosen ? t('askedFor', { name: chosen.name }) : '');
    setText(el.callSignChosenSign, chosen ? '(' + chosen.sign + ')' : '');
  }

  function clearChosen(focus) {
    state.chosen = null;
    showChosen();
    setSearchStatus('', false);
    if (focus) focusQuietly(el.call_sign);
  }

  /* ------------------------------------------------------------------------------------------
   * End chat (inline confirmation)
   * ---------------------------------------------------------------------------------------- */
  function openEndConfirm() {
    if (!hasOpenConversation()) return;
    el.endConfirmPanel.hidden = false;
    el.end.setAttribute('aria-expanded', 'true');
    el.endCancel.focus();
  }

  function closeEndConfirm(restoreFocus) {
    if (el.endConfirmPanel.hidden) return;
    el.endConfirmPanel.hidden = true;
    el.end.setAttribute('aria-expanded', 'false');
    if (restoreFocus && !el.end.hidden) el.end.focus();
  }

  async function endChat() {
    if (state.ending || !hasOpenConversation()) return;
    state.ending = true;
    el.endConfirm.disabled = true;
    setText(el.endConfirm, t('ending'));
    try {
      const r = await api('POST', '/api/conversation/end', {});
      const c = r.data.conversation;
      if (c && typeof c === 'object') applyConversation(c);
      else if (state.conversation) applyConversation(Object.assign({}, state.conversation, { status: 'ended' }));
    } catch (err) {
      if (err.status === 401) {
        sessionGone();
      } else {
        closeEndConfirm(true);
        showAlert(t('errEnd') + ' ' + errorText(err), refText(err));
      }
    } finally {
      state.ending = false;
      el.endConfirm.disabled = false;
      setText(el.endConfirm, t('endConfirmYes'));
    }
  }

  /* ------------------------------------------------------------------------------------------
   * Composer
   * ---------------------------------------------------------------------------------------- */
  const SUPPORTS_FIELD_SIZING = !!(window.CSS && CSS.supports && CSS.supports('field-sizing', 'content'));

  function autosize() {
    if (SUPPORTS_FIELD_SIZING) return;
    const ta = el.composer;
    ta.style.height = 'auto'; // CSSOM, allowed under style-src 'self'
    const border = ta.offsetHeight - ta.clientHeight;
    ta.style.height = Math.min(ta.scrollHeight + border, 160) + 'px';
  }

  /* ------------------------------------------------------------------------------------------
   * Page-level niceties
   * ---------------------------------------------------------------------------------------- */
  function noteUnread() {
    if (!document.hidden) return;
    state.unread++;
    document.title = t('unreadTitle', { n: state.unread, title: state.baseTitle });
  }

  function applyStrings() {
    Array.prototype.forEach.call(document.querySelectorAll('[data-i18n]'), function (n) {
      n.textContent = t(n.getAttribute('data-i18n'));
    });
    Array.prototype.forEach.call(document.querySelectorAll('[data-i18n-placeholder]'), function (n) {
      n.setAttribute('placeholder', t(n.getAttribute('data-i18n-placeholder')));
    });
    Array.prototype.forEach.call(document.querySelectorAll('[data-i18n-aria-label]'), function (n) {
      n.setAttribute('aria-label', t(n.getAttribute('data-i18n-aria-label')));
    });
    const title = t('headerTitle', { org: el.orgTitle.getAttribute('data-org') || '' }).trim();
    el.orgTitle.textContent = title;
    document.title = state.baseTitle = title;
  }

  function cacheElements() {
    const ids = {
      app: 'app', orgTitle: 'org-title', status: 'status', end: 'end',
      endConfirmPanel: 'end-confirm-panel', endConfirm: 'end-confirm', endCancel: 'end-cancel',
      banner: 'banner', alert: 'alert', alertMessage: 'alert-message', alertRef: 'alert-ref',
      alertDismiss: 'alert-dismiss', viewConnecting: 'view-connecting', viewForm: 'view-form',
      viewChat: 'view-chat', prechat: 'prechat', name: 'name', email: 'email', topic: 'topic',
      message: 'message', messageCount: 'message-count', formError: 'form-error', start: 'start',
      notice: 'notice', noticeTitle: 'notice-title', noticeText: 'notice-text',
      noticeIconWait: 'notice-icon-wait', noticeIconInvite: 'notice-icon-invite',
      transcript: 'transcript', typing: 'typing', typingText: 'typing-text',
      composerForm: 'composer-form', composer: 'composer', send: 'send',
      composerCount: 'composer-count', composerError: 'composer-error',
      endedPanel: 'ended-panel', newChat: 'new-chat', noticeAsked: 'notice-asked',
      call_sign: 'callsign-search', callSignCombo: 'callsign-combo', callSignList: 'callsign-list',
      callSignHint: 'callsign-hint', callSignStatus: 'callsign-status',
      callSignChosen: 'callsign-chosen', callSignChosenName: 'callsign-chosen-name',
      callSignChosenSign: 'callsign-chosen-sign', callSignClear: 'callsign-clear'
    };
    Object.keys(ids).forEach(function (k) { el[k] = byId(ids[k]); });
    el.startLabel = el.start.querySelector('[data-i18n]') || el.start;
  }

  function bindEvents() {
    el.prechat.addEventListener('submit', onStart);
    FIELDS.forEach(function (f) {
      el[f].addEventListener(f === 'topic' ? 'change' : 'input', function () {
        if (el[f].hasAttribute('aria-invalid')) setFieldError(f, '');
      });
    });
    el.call_sign.addEventListener('input', onSearchInput);
    el.call_sign.addEventListener('keydown', onSearchKey);
    el.call_sign.addEventListener('blur', closeList);
    // the focus stays in the box, so that a click on the list is a pick, not a blur first
    el.callSignList.addEventListener('mousedown', function (ev) { ev.preventDefault(); });
    el.call_sign.addEventListener('focus', function () {
      if (state.search.results.length && el.call_sign.value.trim()) openList();
    });
    el.callSignClear.addEventListener('click', function () { clearChosen(true); });
    el.message.addEventListener('input', function () { updateCount(el.message, el.messageCount); });

    el.composerForm.addEventListener('submit', function (ev) {
      ev.preventDefault();
      sendFromComposer();
    });
    el.composer.addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.altKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        sendFromComposer();
      }
    });
    el.composer.addEventListener('input', function () {
      autosize();
      updateCount(el.composer, el.composerCount);
      if (el.composerError.textContent && el.composer.value.length <= LIMITS.message) setComposerError('');
      onComposerTyping();
    });

    // Follow the conversation unless the visitor scrolled up to read older messages. (The box
    // shrinking, e.g. when the composer grows, moves away from the bottom without scrolling up.)
    let lastTop = 0;
    el.transcript.addEventListener('scroll', function () {
      const box = el.transcript;
      if (box.scrollHeight - box.scrollTop - box.clientHeight < 48) state.stickToBottom = true;
      else if (box.scrollTop < lastTop) state.stickToBottom = false;
      lastTop = box.scrollTop;
    }, { passive: true });
    // Keep the newest message in view when the transcript's box changes size (typing line,
    // banner, growing composer, on-screen keyboard, window resize).
    if (typeof ResizeObserver === 'function') {
      new ResizeObserver(function () {
        if (state.stickToBottom && !el.viewChat.hidden) scrollToBottom();
      }).observe(el.transcript);
    } else {
      window.addEventListener('resize', function () {
        if (state.stickToBottom && !el.viewChat.hidden) scrollToBottom();
      });
    }

    el.end.addEventListener('click', function () {
      if (el.endConfirmPanel.hidden) openEndConfirm();
      else closeEndConfirm(true);
    });
    el.endCancel.addEventListener('click', function () { closeEndConfirm(true); });
    el.endConfirm.addEventListener('click', endChat);
    el.endConfirmPanel.addEventListener('keydown', function (ev) {
      if (ev.key === 'Escape') {
        ev.preventDefault();
        closeEndConfirm(true);
      }
    });

    el.newChat.addEventListener('click', startNewChat);
    el.alertDismiss.addEventListener('click', hideAlert);

    window.addEventListener('online', function () {
      reconnectNow();
      if (hasOpenConversation() && state.outbox.length) pump();
    });
    window.addEventListener('offline', function () {
      if (hasOpenConversation()) showBanner();
    });
    document.addEventListener('visibilitychange', function () {
      if (document.hidden) return;
      state.unread = 0;
      document.title = state.baseTitle;
      if (hasOpenConversation() && !state.ws) reconnectNow();
      reportRead();
    });
    window.addEventListener('pagehide', function () {
      if (state.myTyping.active) {
        stopTyping(false);
        postTyping(false, true);
      }
    });
  }

  async function boot() {
    cacheElements();
    applyStrings();
    bindEvents();
    setView('loading');
    try {
      const r = await api('GET', '/api/conversation?since=0');
      if (r.data.conversation && typeof r.data.conversation === 'object') {
        loadConversation(r.data.conversation, r.data.messages);
      } else {
        try { window.sessionStorage.removeItem(OUTBOX_KEY); } catch (e) { /* ignore */ }
        showForm();
      }
    } catch (err) {
      // Starting a chat is idempotent on the server, so the form is a safe fallback.
      showForm();
      if (err.status !== 401) showAlert(t('errLoad') + ' ' + errorText(err), refText(err));
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
