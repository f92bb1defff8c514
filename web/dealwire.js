/*
 * dealwire.js: a small browser client for the dealwire push daemon (docs/protocol.md).
 * Plain modern JavaScript, an ES module with no dependencies.
 *
 *   import { DealwireClient } from "/dealwire.js";
 *
 *   const client = new DealwireClient({ userId: "alice" });       // development mode
 *   // with JWT auth: new DealwireClient({ token: jwt }), or { token: async () => freshJwt() }
 *   client.on("deal_alert", (msg) => show(msg));                  // one callback per type
 *   client.on("state", (s) => console.log(s.state, s.code, s.reason));
 *   client.connect();
 *   client.subscribe("hot_deals");
 *
 * What it does for you:
 * - connects to /ws/events on the page's own host (ws: or wss: after the page's scheme), with
 *   ?token= when it has a token and ?user_id= otherwise;
 * - reconnects by itself after any close it did not ask for, after a delay that doubles from
 *   backoff.initialMs up to backoff.maxMs, each drawn at random between half and all of it
 *   (jitter, so that clients dropped together do not come back together), and at once when
 *   the browser says it is back online; the delay starts over once a connection is welcomed;
 * - subscribes again, on every new connection, to the channels it was subscribed to;
 * - when `token` is a function, asks it for a new token before the connection's one expires
 *   (refreshLeadMs before the welcome's token_expires_at, or halfway there when that is
 *   sooner) and sends {"type":"refresh"}: the connection goes on, nothing is missed. A
 *   refresh the server refuses (another user, other channel grants) changes nothing, and
 *   the close at expiry then comes as without one;
 * - on close 4001 (token expired) reconnects at once when `token` is a function (it is asked
 *   for a fresh one each time), and stops when it is a fixed string;
 * - on close 4003 (disconnected by the operator, who may also have banned the user) stops:
 *   state "closed" with the code and the operator's reason; the application decides what
 *   comes next (connect() again). Other codes the operator may use (4000-4999) are retried.
 *
 * Heartbeat: the daemon sends protocol PINGs to a silent client and browsers answer them
 * without help, so nothing is needed to stay connected. A browser cannot see those pings,
 * though, so a connection that died without a close (a laptop lid, a dropped route) looks
 * open until the OS gives up. With pingIntervalMs the client sends a JSON ping that often
 * and reconnects when nothing at all arrived for two intervals.
 *
 * States ("state" events carry {state, code, reason, attempt, delayMs, welcome}):
 *   idle -> connecting -> connected -> reconnecting -> connected ... -> closed
 * "connected" means the server's welcome (connection_established) arrived; `welcome` holds
 * it (user_id, connection_id, heartbeat_interval, ...). "reconnecting" is announced once per
 * close or failed attempt, with its code and reason and the delay before the next attempt,
 * and lasts until a connection is welcomed.
 *
 * Durable delivery (a daemon with --db; docs/delivery.md). Critical messages to the user
 * (price alerts, trip updates, anything published with "critical": true) carry "seq": the
 * user's own counter, one more for each message, with no gap. For those the client:
 * - keeps the last seq it handled, `lastSeq`, per user id, in localStorage under
 *   "dealwire:last_seq:<user id>", so that a reload resumes where the page was
 *   (options.storage: any object with getItem/setItem instead, or null to keep it in memory
 *   only; options.storagePrefix: another prefix, e.g. one per server for a page that talks
 *   to several);
 * - connects with ?last_seq=<last seq> once it has one; the server then sends every stored
 *   message after it, then the live ones. On a device's first connection (no last seq yet)
 *   it sends no last_seq: the server sends what the user has not acknowledged yet (offline
 *   delivery), and the first message with seq is the starting point;
 * - calls the handlers of a message with seq as fn(msg, {seq, replayed}): `replayed` says it
 *   is history (seq <= the last_seq of the welcome or "resumed" before it), sent again or
 *   sent late, not new. Once every handler returned (and those that returned a promise saw
 *   it settle) the message is handled: lastSeq moves to it (in seq order: a seq is handled
 *   when those before it are), is stored, and is acknowledged with {"type":"ack","seq":N}.
 *   Acks are coalesced: one per ackDelayMs (100 ms) or per ackEvery (50) messages, always
 *   of the highest seq handled; one still owed when a connection closes goes on the next.
 *   A handler that throws or rejects is logged, and its message counts as handled. Each
 *   move of lastSeq is announced with a "handled" event ({user, lastSeq});
 * - drops a duplicate (seq <= the last one given to the handlers) without calling any
 *   handler ("ignored" events carry {msg, reason} for the curious);
 * - on a gap (seq > last + 1) sends {"type":"resume","last_seq":last} once, and drops every
 *   message with seq until the server's "resumed" answer, after which the server sends the
 *   missing ones again; if no answer comes within resumeTimeoutMs (10 s) it reconnects;
 * - emits "history_lost" ({lastSeq, serverLastSeq, reason, error, source}) when the server
 *   could not give back everything after lastSeq ("recovered": false in the welcome or the
 *   "resumed" answer): reason "gone" (messages after lastSeq were removed from the inbox),
 *   "server_behind" (the server's last seq is below lastSeq, e.g. a new database: lastSeq
 *   then follows the server's), "replay_error" (the server could not read its inbox; the
 *   text in `error`), or "gap" (a server that cannot resume skipped some). The application
 *   should reload its state through its own API; the next message is the new starting point.
 * With a token the user is known from the welcome: options.userId, when given beside the
 * token, names whose last seq the first connection after a page load uses; without it that
 * connection goes without last_seq and the client resumes from the stored one once the
 * welcome names the user. Messages without seq (all of them without --db) are handled as
 * they always were: at most once, nothing stored, nothing acknowledged.
 */

/** Reconnection delays, in milliseconds. */
export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 500, maxMs: 30000, factor: 2 });

/** Acknowledgements and resumes (durable delivery), in milliseconds and messages. */
export const DEFAULT_DURABLE = Object.freeze({
    ackDelayMs: 100,
    ackEvery: 50,
    resumeTimeoutMs: 10000,
    storagePrefix: "dealwire:last_seq:",
});

/** What a close code means, for people (RFC 6455 and docs/protocol.md). */
export const CLOSE_REASONS = Object.freeze({
    1000: "closed normally",
    1001: "server going away",
    1002: "protocol error",
    1006: "connection lost or refused",
    1007: "invalid data",
    1008: "policy violation (slow client or flood)",
    1009: "message too big",
    1011: "server error",
    4000: "no answer from the server",
    4001: "token expired",
    4003: "disconnected by the operator",
});

/** A readable description of a close: "1001 server going away". */
export function describeClose(code, reason) {
    const known = CLOSE_REASONS[code] || "";
    const text = reason && reason !== known ? `${known}${known ? ": " : ""}${reason}` : known;
    return `${code}${text ? " " + text : ""}`;
}

/** The WebSocket endpoint on the page's own host. */
export function defaultUrl(loc = globalThis.location) {
    return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws/events`;
}

const OPEN = 1; /* WebSocket.OPEN */

function isSeq(v) {
    return Number.isSafeInteger(v) && v >= 0;
}

function isThenable(v) {
    return v !== null && (typeof v === "object" || typeof v === "function") &&
        typeof v.then === "function";
}

/* localStorage when this page may use it (it throws in some private modes and sandboxes). */
function defaultStorage() {
    try {
        const storage = globalThis.localStorage;
        return storage && typeof storage.getItem === "function" ? storage : null;
    } catch (err) {
        return null;
    }
}

export class DealwireClient {
    /**
     * options: url (default: defaultUrl()), userId (development mode; with a token, only
     * whose stored last seq to start from), token (a string, or a function returning one or
     * a promise of one), backoff ({initialMs, maxMs, factor}), pingIntervalMs (0: off),
     * storage (where lastSeq is kept: default localStorage, null for memory only),
     * storagePrefix, ackDelayMs, ackEvery, resumeTimeoutMs (DEFAULT_DURABLE), refreshLeadMs
     * (how long before the token's expiry a token function is asked for the next one:
     * default 60000), WebSocket (the constructor to use; default the global one).
     */
    constructor(options = {}) {
        this.url = options.url || defaultUrl();
        this.userId = options.userId || null;
        this.token = options.token || null;
        this.backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
        this.pingIntervalMs = options.pingIntervalMs || 0;
        this.refreshLeadMs = options.refreshLeadMs || 60000;
        const durable = { ...DEFAULT_DURABLE };
        for (const key of Object.keys(durable)) {
            if (options[key] !== undefined && options[key] !== null) durable[key] = options[key];
        }
        this.ackDelayMs = durable.ackDelayMs;
        this.ackEvery = Math.max(1, durable.ackEvery);
        this.resumeTimeoutMs = durable.resumeTimeoutMs;
        this.storagePrefix = durable.storagePrefix;
        this.storage = "storage" in options ? options.storage || null : defaultStorage();
        this.state = "idle";
        this.welcome = null;
        this.serverLastSeq = null; /* the last_seq of the latest welcome or "resumed" */
        this.acksSent = 0;
        this.attempt = 0; /* failed attempts since the last welcome */
        this.channels = new Set();
        this._WebSocket = options.WebSocket || null;
        this._handlers = new Map();
        this._ws = null;
        this._retryTimer = null;
        this._pingTimer = null;
        this._refreshTimer = null;
        this._lastSeen = 0;
        this._stopped = true;
        this._generation = 0; /* bumped by each _open and _drop: a late _open gives up */
        /* Durable delivery: the user's track (below), what this connection asked for, and
         * where it stands. */
        this._track = null;
        this._welcomedUser = null;
        this._askedSeq = null; /* the last_seq this connection was opened with */
        this._durable = false; /* the welcome carried last_seq or recovered */
        this._replayUntil = null; /* seq <= this is history on this connection */
        this._floating = true; /* the next message with seq sets the starting point */
        this._resuming = false; /* a resume was sent; seq messages wait for "resumed" */
        this._resumeFrom = null; /* the last_seq it asked for */
        this._resumeTimer = null;
        this._ackTimer = null;
        this._online = () => {
            if (this.state === "reconnecting" && !this._ws) this._retryNow();
        };
    }

    /** The last seq handled for the current user (null: none yet). Before the first
     * connection, the one stored for userId. */
    get lastSeq() {
        if (!this._track && this.userId) this._track = this._trackOf(this.userId);
        return this._track ? this._track.handled : null;
    }

    /** Calls fn(msg) for each message of `type` ("deal_alert", "error", ...), fn(msg) for
     * every message with "message", fn(info) with "state", and fn(Error) with "invalid" for a
     * frame that is not a JSON object with a type; messages with seq add a second argument,
     * {seq, replayed}, and fn may return a promise (see the top of this file). Also
     * "history_lost", "handled" and "ignored". Returns a function that removes it. */
    on(type, fn) {
        if (!this._handlers.has(type)) this._handlers.set(type, new Set());
        this._handlers.get(type).add(fn);
        return () => this._handlers.get(type).delete(fn);
    }

    /** Starts connecting (and reconnecting) until close(). */
    connect() {
        if (!this._stopped) return;
        this._stopped = false;
        this.attempt = 0;
        globalThis.addEventListener?.("online", this._online);
        this._open();
    }

    /** Closes the connection and stops reconnecting. */
    close(code = 1000, reason = "closed by the client") {
        this._stopped = true;
        globalThis.removeEventListener?.("online", this._online);
        this._drop(code, reason);
        this._setState("closed", { code, reason });
    }

    /** Closes the current connection and opens a new one at once (e.g. after changing
     * userId or token). */
    reconnect() {
        this._drop(1000, "reconnecting");
        if (this._stopped) {
            this.connect();
        } else {
            this._retryNow();
        }
    }

    /** Sends obj as JSON. Returns false (and sends nothing) while not connected. */
    send(obj) {
        if (!this._ws || this._ws.readyState !== OPEN) return false;
        this._ws.send(JSON.stringify(obj));
        return true;
    }

    /** Joins channel, now if connected, and again on every later connection. */
    subscribe(channel) {
        this.channels.add(channel);
        return this.send({ type: "subscribe", channel });
    }

    /** Leaves channel. */
    unsubscribe(channel) {
        this.channels.delete(channel);
        return this.send({ type: "unsubscribe", channel });
    }

    /** Asks for this user's statistics (answered with a "stats" message). */
    getStats() {
        return this.send({ type: "get_stats" });
    }

    /* ---- internals ------------------------------------------------------------------- */

    /* Calls type's handlers; returns what they returned (a throw is logged and left out). */
    _emit(type, arg, info) {
        const results = [];
        for (const fn of this._handlers.get(type) || []) {
            try {
                results.push(info === undefined ? fn(arg) : fn(arg, info));
            } catch (err) {
                console.error(`dealwire: a "${type}" callback failed`, err);
            }
        }
        return results;
    }

    _setState(state, info = {}) {
        this.state = state;
        this._emit("state", { state, attempt: this.attempt, welcome: this.welcome, ...info });
    }

    async _url() {
        const url = new URL(this.url);
        const token = typeof this.token === "function" ? await this.token() : this.token;
        if (token) {
            url.searchParams.set("token", token);
        } else if (this.userId) {
            url.searchParams.set("user_id", this.userId);
        }
        /* Whose last seq: the user named here, or with a token the one the last welcome
         * named (the token's owner), else userId if given. */
        const user = token ? this._welcomedUser || this.userId : this.userId;
        this._askedSeq = null;
        if (user) {
            const track = this._trackOf(user);
            this._track = track;
            if (track.seen !== null) {
                url.searchParams.set("last_seq", String(track.seen));
                this._askedSeq = track.seen;
            }
        }
        return url.toString();
    }

    async _open() {
        const generation = ++this._generation;
        this._retryTimer = null;
        if (this.state !== "reconnecting") this._setState("connecting");
        let url;
        try {
            url = await this._url();
        } catch (err) {
            if (generation === this._generation)
                this._retryLater(0, `no token: ${err && err.message ? err.message : err}`);
            return;
        }
        if (this._stopped || generation !== this._generation) return; /* closed or redone */
        let ws;
        try {
            const Ctor = this._WebSocket || globalThis.WebSocket;
            ws = new Ctor(url);
        } catch (err) {
            this._retryLater(0, String(err && err.message ? err.message : err));
            return;
        }
        this._ws = ws;
        this._resetConnection();
        ws.onmessage = (ev) => this._onMessage(ws, ev);
        ws.onclose = (ev) => this._onClose(ws, ev);
        ws.onerror = () => {}; /* a close event follows, with the code */
    }

    _onMessage(ws, ev) {
        if (ws !== this._ws) return;
        this._lastSeen = Date.now();
        let msg;
        try {
            msg = JSON.parse(ev.data);
        } catch (err) {
            this._emit("invalid", new Error(`not JSON: ${String(ev.data).slice(0, 80)}`));
            return;
        }
        if (!msg || typeof msg !== "object" || typeof msg.type !== "string") {
            this._emit("invalid", new Error("a message without a type"));
            return;
        }
        if ("seq" in msg && isSeq(msg.seq) && msg.seq > 0) {
            this._onSeqMessage(msg);
            return;
        }
        let lost = null;
        if (msg.type === "connection_established") {
            this.welcome = msg;
            this.attempt = 0;
            lost = this._onWelcome(msg);
            for (const channel of this.channels) this.send({ type: "subscribe", channel });
            this._startPings();
            this._scheduleRefresh(msg.token_expires_at);
            this._setState("connected");
        } else if (msg.type === "resumed") {
            lost = this._onResumed(msg);
        } else if (msg.type === "notification" && msg.action === "refresh") {
            this._scheduleRefresh(msg.token_expires_at);
        }
        this._emit(msg.type, msg);
        this._emit("message", msg);
        if (lost) this._emit("history_lost", lost);
    }

    _onClose(ws, ev) {
        if (ws !== this._ws) return;
        this._ws = null;
        this._stopPings();
        this._resetConnection();
        if (this._stopped) return;
        if (ev.code === 4003 || (ev.code === 4001 && typeof this.token !== "function")) {
            this._stopped = true;
            this._setState("closed", { code: ev.code, reason: describeClose(ev.code, ev.reason) });
            return;
        }
        if (ev.code === 4001) {
            this.attempt = 0; /* a fresh token is all it takes */
        }
        this._retryLater(ev.code, ev.reason);
    }

    /* Closes the socket without waiting for its close event (which it will not handle); an
     * ack still owed goes first. */
    _drop(code, reason) {
        this._sendAck();
        this._generation += 1;
        clearTimeout(this._retryTimer);
        this._retryTimer = null;
        this._stopPings();
        this._resetConnection();
        const ws = this._ws;
        this._ws = null;
        if (ws) {
            ws.onmessage = ws.onclose = ws.onerror = null;
            try {
                ws.close(code, reason);
            } catch (err) {
                ws.close();
            }
        }
    }

    _delay() {
        const b = this.backoff;
        const full = Math.min(b.maxMs, b.initialMs * Math.pow(b.factor, this.attempt));
        return Math.round(full / 2 + (Math.random() * full) / 2);
    }

    _retryLater(code, reason) {
        const delayMs = this._delay();
        this.attempt += 1;
        this._setState("reconnecting", {
            code,
            reason: code ? describeClose(code, reason) : reason,
            delayMs,
        });
        this._retryTimer = setTimeout(() => this._open(), delayMs);
    }

    _retryNow() {
        clearTimeout(this._retryTimer);
        this._open();
    }

    _startPings() {
        this._stopPings();
        if (!this.pingIntervalMs) return;
        this._pingTimer = setInterval(() => {
            if (Date.now() - this._lastSeen > 2 * this.pingIntervalMs) {
                this._drop(4000, "no answer");
                this._retryLater(4000, "");
                return;
            }
            this.send({ type: "ping" });
        }, this.pingIntervalMs);
    }

    _stopPings() {
        clearInterval(this._pingTimer);
        this._pingTimer = null;
    }

    /* ---- durable delivery: seq, ack, resume ----------------------------------------------
     *
     * A track is one user's position: `seen`, the highest seq given to the handlers (or the
     * starting point), which finds duplicates and gaps and is what a connection or a resume
     * asks to continue after; and `handled`, the highest seq whose handlers are done along
     * with all before it, which is stored and acknowledged. They differ only while a handler's
     * promise is pending. `queue` holds the seqs given out and not yet handled, in order. A
     * track outlives a change of user, so that a promise settling late still stores its seq
     * for its own user.
     */

    _trackOf(user) {
        if (this._track && this._track.user === user) return this._track;
        const handled = this._loadSeq(user);
        return { user, seen: handled, handled, queue: [], ackOwed: false, sinceAck: 0 };
    }

    _storageKey(user) {
        return `${this.storagePrefix}${user}`;
    }

    _loadSeq(user) {
        if (!this.storage) return null;
        try {
            const text = this.storage.getItem(this._storageKey(user));
            if (typeof text === "string" && /^[0-9]{1,16}$/.test(text)) {
                const n = Number(text);
                if (isSeq(n)) return n;
            }
        } catch (err) {
            /* unreadable storage: start as a new device */
        }
        return null;
    }

    _storeSeq(track) {
        if (!this.storage || track.handled === null) return;
        try {
            this.storage.setItem(this._storageKey(track.user), String(track.handled));
        } catch (err) {
            /* full or refused: the position stays in memory */
        }
    }

    /* With a token function: the next token is asked for and sent refreshLeadMs before
     * expiresAt (the server's ISO time), or halfway there when that is sooner. */
    _scheduleRefresh(expiresAt) {
        clearTimeout(this._refreshTimer);
        this._refreshTimer = null;
        const at = typeof expiresAt === "string" ? Date.parse(expiresAt) : NaN;
        if (typeof this.token !== "function" || Number.isNaN(at)) return;
        const left = at - Date.now();
        const ws = this._ws;
        this._refreshTimer = setTimeout(
            () => this._refresh(ws),
            Math.max(0, left - Math.min(this.refreshLeadMs, left / 2))
        );
    }

    async _refresh(ws) {
        this._refreshTimer = null;
        let token;
        try {
            token = await this.token();
        } catch (err) {
            return; /* no new token: the close at expiry reconnects, asking again */
        }
        if (ws === this._ws && token) this.send({ type: "refresh", token });
    }

    /* A new socket, or none: nothing of the last one's replay or resume carries over. */
    _resetConnection() {
        clearTimeout(this._refreshTimer);
        this._refreshTimer = null;
        this._durable = false;
        this._replayUntil = null;
        this._resuming = false;
        clearTimeout(this._resumeTimer);
        this._resumeTimer = null;
        clearTimeout(this._ackTimer);
        this._ackTimer = null;
    }

    /* The welcome: whose track, whether the server resumes, and what it could recover.
     * Returns the "history_lost" details to announce, or null. */
    _onWelcome(msg) {
        this._resetConnection();
        if (typeof msg.user_id === "string" && msg.user_id) {
            this._welcomedUser = msg.user_id;
            this._track = this._trackOf(msg.user_id);
        }
        const track = this._track;
        this._durable = "last_seq" in msg || "recovered" in msg;
        this._floating = !track || track.seen === null;
        if (!this._durable || !track) return null;
        this._takeServerSeq(msg);
        let lost = null;
        if (msg.recovered === false) {
            lost = this._notRecovered(track, msg, "welcome", this._askedSeq);
        } else if (track.seen !== null && track.seen !== this._askedSeq) {
            /* Opened before the user was known (a token): continue from the stored seq. */
            this._resume(track);
        }
        if (track.ackOwed) this._sendAck();
        return lost;
    }

    _onResumed(msg) {
        const track = this._track;
        const asked = this._resuming ? this._resumeFrom : null;
        this._resuming = false;
        clearTimeout(this._resumeTimer);
        this._resumeTimer = null;
        if (!track) return null;
        this._takeServerSeq(msg);
        if (msg.recovered === false) return this._notRecovered(track, msg, "resumed", asked);
        return null;
    }

    _takeServerSeq(msg) {
        if (isSeq(msg.last_seq)) {
            this.serverLastSeq = msg.last_seq;
            this._replayUntil = msg.last_seq;
        } else {
            this._replayUntil = null;
        }
    }

    /* "recovered": false. Past a server below our position (a new database) our position
     * follows the server's numbering; in every case the next message is taken as it comes. */
    _notRecovered(track, msg, source, asked) {
        const server = isSeq(msg.last_seq) ? msg.last_seq : null;
        let reason = "gone";
        if (msg.replay_error !== undefined) {
            reason = "replay_error";
        } else if (server !== null && track.seen !== null && track.seen > server) {
            reason = "server_behind";
        }
        const lost = {
            lastSeq: track.handled,
            serverLastSeq: server,
            reason,
            error: msg.replay_error === undefined ? null : String(msg.replay_error),
            source,
            askedSeq: asked,
        };
        if (reason === "server_behind") {
            track.seen = track.handled = server;
            track.queue = []; /* late promises of the old numbering store nothing */
            this._storeSeq(track);
            this._emit("handled", { user: track.user, lastSeq: track.handled });
        }
        this._floating = true;
        return lost;
    }

    _ignore(msg, reason) {
        this._emit("ignored", { msg, reason });
    }

    _onSeqMessage(msg) {
        const seq = msg.seq;
        if (!this._track && this._welcomedUser) this._track = this._trackOf(this._welcomedUser);
        const track = this._track;
        if (!track) {
            /* Before any welcome: cannot happen with dealwire; deliver as a live push. */
            this._emit(msg.type, msg);
            this._emit("message", msg);
            return;
        }
        if (this._resuming) {
            this._ignore(msg, "resuming");
            return;
        }
        if (track.seen !== null && seq <= track.seen) {
            this._ignore(msg, "duplicate");
            return;
        }
        if (this._floating) {
            /* The starting point. A message above the server's last seq is live: the one
             * before it is the server's last seq, and a gap to it is a gap. */
            this._floating = false;
            const until = this._replayUntil;
            track.seen = until !== null && seq > until ? Math.max(until, track.seen ?? 0) : seq - 1;
        }
        if (seq > track.seen + 1) {
            if (this._durable) {
                this._ignore(msg, "gap");
                this._resume(track);
                return;
            }
            /* A server that cannot resume: say so, and go on from here. */
            this._emit("history_lost", {
                lastSeq: track.handled,
                serverLastSeq: null,
                reason: "gap",
                error: null,
                source: "message",
                askedSeq: null,
            });
        }
        this._dispatchSeq(track, msg);
    }

    _resume(track) {
        if (this._resuming) return;
        if (!this.send({ type: "resume", last_seq: track.seen })) return; /* closing */
        this._resuming = true;
        this._resumeFrom = track.seen;
        clearTimeout(this._resumeTimer);
        this._resumeTimer = setTimeout(() => {
            this._resumeTimer = null;
            if (!this._resuming || this._stopped) return;
            this._drop(4000, "no answer to resume");
            this._retryLater(4000, "no answer to resume");
        }, this.resumeTimeoutMs);
    }

    _dispatchSeq(track, msg) {
        const seq = msg.seq;
        track.seen = seq;
        const entry = { seq, done: false };
        track.queue.push(entry);
        const info = { seq, replayed: this._replayUntil !== null && seq <= this._replayUntil };
        const results = [...this._emit(msg.type, msg, info), ...this._emit("message", msg, info)];
        const pending = results.filter(isThenable);
        const finish = () => {
            entry.done = true;
            this._advance(track);
        };
        if (!pending.length) {
            finish();
            return;
        }
        Promise.allSettled(pending).then((outcomes) => {
            for (const o of outcomes) {
                if (o.status === "rejected")
                    console.error(`dealwire: a handler of seq ${seq} failed`, o.reason);
            }
            finish();
        });
    }

    /* Moves `handled` over the done seqs at the front of the queue; stores and acks it. */
    _advance(track) {
        let moved = 0;
        while (track.queue.length && track.queue[0].done) {
            track.handled = track.queue.shift().seq;
            moved += 1;
        }
        if (!moved) return;
        this._storeSeq(track);
        track.ackOwed = true;
        track.sinceAck += moved;
        this._emit("handled", { user: track.user, lastSeq: track.handled });
        if (track !== this._track) return;
        if (track.sinceAck >= this.ackEvery) {
            this._sendAck();
        } else if (!this._ackTimer) {
            this._ackTimer = setTimeout(() => this._sendAck(), this.ackDelayMs);
        }
    }

    _sendAck() {
        clearTimeout(this._ackTimer);
        this._ackTimer = null;
        const track = this._track;
        if (!track || !track.ackOwed || !(track.handled > 0)) return;
        if (this.send({ type: "ack", seq: track.handled })) {
            track.ackOwed = false;
            track.sinceAck = 0;
            this.acksSent += 1;
        }
    }
}
