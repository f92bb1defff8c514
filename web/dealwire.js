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
 * - on close 4001 (token expired) reconnects at once when `token` is a function (it is asked
 *   for a fresh one each time), and stops when it is a fixed string.
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
 */

/** Reconnection delays, in milliseconds. */
export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 500, maxMs: 30000, factor: 2 });

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

export class DealwireClient {
    /**
     * options: url (default: defaultUrl()), userId (development mode), token (a string, or a
     * function returning one or a promise of one), backoff ({initialMs, maxMs, factor}),
     * pingIntervalMs (0: off).
     */
    constructor(options = {}) {
        this.url = options.url || defaultUrl();
        this.userId = options.userId || null;
        this.token = options.token || null;
        this.backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
        this.pingIntervalMs = options.pingIntervalMs || 0;
        this.state = "idle";
        this.welcome = null;
        this.attempt = 0; /* failed attempts since the last welcome */
        this.channels = new Set();
        this._handlers = new Map();
        this._ws = null;
        this._retryTimer = null;
        this._pingTimer = null;
        this._lastSeen = 0;
        this._stopped = true;
        this._generation = 0; /* bumped by each _open and _drop: a late _open gives up */
        this._online = () => {
            if (this.state === "reconnecting" && !this._ws) this._retryNow();
        };
    }

    /** Calls fn(msg) for each message of `type` ("deal_alert", "error", ...), fn(msg) for
     * every message with "message", fn(info) with "state", and fn(Error) with "invalid" for a
     * frame that is not a JSON object with a type. Returns a function that removes it. */
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
        if (!this._ws || this._ws.readyState !== WebSocket.OPEN) return false;
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

    _emit(type, arg) {
        for (const fn of this._handlers.get(type) || []) {
            try {
                fn(arg);
            } catch (err) {
                console.error(`dealwire: a "${type}" callback failed`, err);
            }
        }
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
            ws = new WebSocket(url);
        } catch (err) {
            this._retryLater(0, String(err && err.message ? err.message : err));
            return;
        }
        this._ws = ws;
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
        if (msg.type === "connection_established") {
            this.welcome = msg;
            this.attempt = 0;
            for (const channel of this.channels) this.send({ type: "subscribe", channel });
            this._startPings();
            this._setState("connected");
        }
        this._emit(msg.type, msg);
        this._emit("message", msg);
    }

    _onClose(ws, ev) {
        if (ws !== this._ws) return;
        this._ws = null;
        this._stopPings();
        if (this._stopped) return;
        if (ev.code === 4001 && typeof this.token !== "function") {
            this._stopped = true;
            this._setState("closed", { code: ev.code, reason: describeClose(ev.code, ev.reason) });
            return;
        }
        if (ev.code === 4001) {
            this.attempt = 0; /* a fresh token is all it takes */
        }
        this._retryLater(ev.code, ev.reason);
    }

    /* Closes the socket without waiting for its close event (which it will not handle). */
    _drop(code, reason) {
        this._generation += 1;
        clearTimeout(this._retryTimer);
        this._retryTimer = null;
        this._stopPings();
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
}
