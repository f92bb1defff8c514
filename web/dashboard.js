/*
 * dashboard.js: the live dashboard at / (index.html). It connects with dealwire.js and shows
 * what arrives: deal alerts, price alerts, trip updates, notifications, and the connection's
 * own story.
 *
 * Who the page is: ?user_id=<id> in the page address (default: a demo-data user who owns
 * price watches), or, when the daemon requires JWTs, #token=<jwt> in the fragment, which the
 * browser never sends to a server; the page reads it, then takes it out of the address bar
 * and history.
 *
 * Everything from the server is put into the page as text (textContent, attribute values),
 * never parsed as HTML, and each list keeps the newest MAX_ITEMS entries.
 *
 * Durable delivery (a daemon with --db): each message with a seq shows it ("#17"), and those
 * that are history (seq up to the last_seq of the welcome or of a "resumed" answer: sent
 * again after a reconnect, or kept while no one was connected) carry a "replayed" badge. The
 * counters show the last seq handled; a notice says when the server could not give back
 * everything missed. window.dealwireDashboard holds the client and `handled`, one entry
 * {seq, type, replayed, dealId} per message with seq handled (the newest MAX_HANDLED), for
 * people and tests looking at the page from outside.
 */
import { DealwireClient, describeClose } from "./dealwire.js";

const DEFAULT_USER = "demo-user-001";
const USER_ID_RE = /^[A-Za-z0-9_.:@-]{1,128}$/;
const USER_ID_HELP = "A user id is 1 to 128 of A-Z a-z 0-9 _ . : @ -";
const CHANNEL_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const MAX_ITEMS = 50;
const MAX_HANDLED = 10000;
const LEVELS = new Set(["info", "success", "warning", "error"]);
const COUNTED = ["deal_alert", "price_alert", "trip_update", "notification"];

const $ = (id) => document.getElementById(id);
const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const counts = { other: 0, reconnects: 0, replayed: 0 };
for (const type of COUNTED) counts[type] = 0;

/* ---- DOM helpers (text only) ------------------------------------------------------------ */

function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null && text !== "") node.textContent = String(text);
    return node;
}

function isNumber(v) {
    return typeof v === "number" && Number.isFinite(v);
}

function price(v) {
    return isNumber(v) ? money.format(v) : v === undefined || v === null ? "" : String(v);
}

function clock(iso) {
    const when = iso ? new Date(iso) : new Date();
    return Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString();
}

/* Puts item first in list; an older item with the same key goes (so a deal announced again
 * moves up instead of repeating), and the list keeps MAX_ITEMS. */
function prepend(list, item, key) {
    if (key) {
        item.dataset.key = key;
        for (const old of list.children) {
            if (old.dataset.key === key) {
                item.dataset.seen = String(Number(old.dataset.seen || 1) + 1);
                old.remove();
                break;
            }
        }
    }
    list.prepend(item);
    while (list.children.length > MAX_ITEMS) list.lastElementChild.remove();
}

function meta(...parts) {
    const shown = parts.filter((p) => p !== undefined && p !== null && p !== "");
    return el("span", "meta", shown.join(" · "));
}

/* A message with seq (info from dealwire.js: {seq, replayed}) shows it, and a badge when it
 * is history rather than news. */
function markSeq(item, info) {
    if (!info) return;
    item.dataset.seq = String(info.seq);
    const tags = [el("span", "seq", `#${info.seq}`)];
    if (info.replayed) {
        item.dataset.replayed = "true";
        tags.push(el("span", "badge replayed", "replayed"));
    }
    item.prepend(...tags);
}

/* ---- renderers, one per message type -------------------------------------------------- */

function showDeal(msg, info) {
    const kind = msg.alert_type === "trending" ? "trending" : "hot_deal";
    const item = el("li", `deal ${kind}`);
    item.dataset.dealId = String(msg.deal_id ?? "");
    item.append(el("span", "badge", kind === "trending" ? "trending" : "hot"));
    item.append(el("span", "title", msg.title ?? msg.deal_id ?? "(untitled deal)"));
    item.append(el("span", "price", price(msg.price)));
    if (isNumber(msg.savings_percent) || isNumber(msg.discount)) {
        const pct = isNumber(msg.savings_percent) ? `${msg.savings_percent}%` : "";
        const off = isNumber(msg.discount) ? price(msg.discount) : "";
        item.append(el("span", "savings", `save ${[pct, off].filter(Boolean).join(", ")}`));
    }
    const m = msg.metadata && typeof msg.metadata === "object" ? msg.metadata : {};
    const route = typeof m.origin === "string" && typeof m.destination === "string"
        ? `${m.origin} → ${m.destination}` : "";
    item.append(meta(msg.category, route, typeof m.provider === "string" ? m.provider : "",
                     msg.deal_id, clock(msg.timestamp)));
    markSeq(item, info);
    prepend($("deal-alerts"), item, `${kind}:${msg.deal_id}`);
}

function showPriceAlert(msg, info) {
    const item = el("li", "price-alert");
    item.dataset.dealId = String(msg.deal_id ?? "");
    item.append(el("span", "title", msg.title ?? msg.deal_id ?? "(untitled deal)"));
    item.append(el("span", "price", price(msg.current_price)));
    const figures = el("span", "figures");
    figures.append(el("span", "threshold", `your threshold ${price(msg.threshold)}`));
    if (isNumber(msg.drop_amount) && msg.drop_amount > 0) {
        const pct = msg.drop_percent > 0 ? ` (${msg.drop_percent}%)` : "";
        figures.append(el("span", "drop", `down ${price(msg.drop_amount)}${pct}`));
    }
    item.append(figures);
    if (Array.isArray(msg.reasons) && msg.reasons.length) {
        const reasons = el("ul", "reasons");
        for (const r of msg.reasons) reasons.append(el("li", "", r));
        item.append(reasons);
    }
    item.append(meta(msg.deal_id, clock(msg.timestamp)));
    markSeq(item, info);
    prepend($("price-alerts"), item);
}

/* A plan's updates share one entry: a new entry starts at progress 0 (status "started"). */
function showTripUpdate(msg, info) {
    const list = $("trip-updates");
    const progress = isNumber(msg.progress) ? Math.max(0, Math.min(100, msg.progress)) : 0;
    let item = list.firstElementChild;
    if (!item || progress === 0 || msg.status === "started" || item.dataset.done === "true") {
        item = el("li", "trip");
        prepend(list, item);
    }
    item.replaceChildren();
    item.dataset.status = String(msg.status ?? "");
    item.dataset.done = String(progress >= 100);
    item.append(el("span", "trip-status", msg.status ?? ""));
    item.append(el("span", "message", msg.message ?? ""));
    const bar = el("progress");
    bar.max = 100;
    bar.value = progress;
    bar.textContent = `${progress}%`;
    item.append(bar, el("span", "percent", `${progress}%`));
    const extra = msg.extra_data && typeof msg.extra_data === "object" ? msg.extra_data : {};
    const facts = [];
    if (extra.plan_id !== undefined) facts.push(`plan ${extra.plan_id}`);
    if (extra.total_cost !== undefined) facts.push(`total ${price(extra.total_cost)}`);
    if (isNumber(extra.fit_score)) facts.push(`fit ${extra.fit_score}`);
    if (extra.count !== undefined) facts.push(`${extra.count} options`);
    item.append(meta(...facts, clock(msg.timestamp)));
    markSeq(item, info);
}

function showNotification(msg, info) {
    const level = LEVELS.has(msg.level) ? msg.level : "info";
    const item = el("li", `note level-${level}`);
    item.append(el("span", "level", level));
    item.append(el("span", "message", msg.message ?? ""));
    item.append(meta(msg.channel ? `#${msg.channel}` : "", clock(msg.timestamp)));
    markSeq(item, info);
    prepend($("notifications"), item);
}

/* ---- the connection ------------------------------------------------------------------- */

function logConnection(text, event, code) {
    const item = el("li", "", `${clock()} ${text}`);
    item.dataset.event = event;
    if (code) item.dataset.code = String(code);
    prepend($("connection-log"), item);
}

function showCounts() {
    for (const [name, n] of Object.entries(counts)) {
        const node = $(`count-${name}`);
        node.textContent = String(n);
        node.dataset.count = String(n);
    }
}

function showState(info) {
    const status = $("status");
    status.dataset.state = info.state;
    $("state").textContent = info.state;
    let detail = "";
    if (info.state === "connected") {
        detail = `as ${info.welcome.user_id}, connection ${info.welcome.connection_id}`;
        $("state-user").textContent = info.welcome.user_id;
        if (token) $("user-id").value = info.welcome.user_id;
        const history = Number.isInteger(info.welcome.last_seq)
            ? `, history through #${info.welcome.last_seq}` : "";
        logConnection(`connected ${detail}${history}`, "connected");
        showLastSeq(client.lastSeq);
    } else if (info.state === "reconnecting") {
        const retry = `retry ${info.attempt} in ${(info.delayMs / 1000).toFixed(1)} s`;
        detail = `${info.reason || "closed"}; ${retry}`;
        if (info.attempt === 1) counts.reconnects += 1;
        logConnection(`closed ${info.reason || ""}, ${retry}`, "closed", info.code);
    } else if (info.state === "closed") {
        detail = info.reason || "";
        logConnection(`closed ${detail}`, "closed", info.code);
    } else if (info.state === "connecting") {
        detail = token ? "with a token" : `as ${client.userId}`;
    }
    $("state-detail").textContent = detail;
    showCounts();
}

function showLastSeq(seq) {
    const node = $("last-seq");
    node.textContent = seq === null || seq === undefined ? "-" : `#${seq}`;
    node.dataset.seq = seq === null || seq === undefined ? "" : String(seq);
}

function historyText(lost) {
    const mine = lost.lastSeq === null ? "this page's start" : `#${lost.lastSeq}`;
    switch (lost.reason) {
    case "server_behind":
        return `The server's history ends at #${lost.serverLastSeq}, before ${mine} ` +
            "(a new database?): counting again from there. Reload for the current state.";
    case "replay_error":
        return `The server could not read back what was missed after ${mine} ` +
            `(${lost.error}). Reload for the current state.`;
    case "gap":
        return `Messages after ${mine} were skipped. Reload for the current state.`;
    default:
        return `Some messages after ${mine} are no longer kept by the server. ` +
            "Reload for the current state.";
    }
}

function showHistoryLost(lost) {
    const notice = $("history-notice");
    notice.textContent = historyText(lost);
    notice.dataset.reason = lost.reason;
    notice.hidden = false;
    logConnection(`history not recovered (${lost.reason}) after ${lost.lastSeq ?? "-"}`,
                  "history_lost");
}

function showChannels() {
    const list = $("channels");
    list.replaceChildren(...[...client.channels].sort().map((c) => el("li", "", c)));
}

/* ---- start ------------------------------------------------------------------------------ */

const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const token = fragment.get("token") || null;
if (token) {
    /* Out of the address bar, history and bookmarks; a reload needs the token again. */
    history.replaceState(null, "", location.pathname + location.search);
}
const userId = params.get("user_id") || DEFAULT_USER;

const client = new DealwireClient({ userId, token, pingIntervalMs: 25000 });
const handled = [];
window.dealwireDashboard = Object.freeze({ client, handled });
client.on("state", showState);
client.on("deal_alert", showDeal);
client.on("price_alert", showPriceAlert);
client.on("trip_update", showTripUpdate);
client.on("notification", showNotification);
client.on("message", (msg, info) => {
    if (info) {
        handled.push({ seq: info.seq, type: msg.type, replayed: info.replayed,
                       dealId: msg.deal_id ?? null });
        if (handled.length > MAX_HANDLED) handled.splice(0, handled.length - MAX_HANDLED);
        if (info.replayed) counts.replayed += 1;
    }
    if (COUNTED.includes(msg.type)) {
        counts[msg.type] += 1;
    } else if (msg.type !== "connection_established" && msg.type !== "pong") {
        counts.other += 1;
    }
    showCounts();
});
client.on("error", (msg) => {
    logConnection(`error ${msg.code ?? ""}: ${msg.message ?? ""}`, "error");
});
client.on("invalid", (err) => logConnection(`unreadable message: ${err.message}`, "error"));
client.on("handled", (h) => {
    if (h.user === client.welcome?.user_id) showLastSeq(h.lastSeq);
});
client.on("history_lost", showHistoryLost);

const userInput = $("user-id");
userInput.value = token ? "" : userId;
userInput.disabled = $("connect").disabled = Boolean(token);
$("connect-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const next = userInput.value.trim();
    if (!USER_ID_RE.test(next)) {
        $("form-error").textContent = USER_ID_HELP;
        return;
    }
    $("form-error").textContent = "";
    $("history-notice").hidden = true;
    showLastSeq(null);
    client.userId = next;
    const url = new URL(location.href);
    url.searchParams.set("user_id", next);
    history.replaceState(null, "", url.pathname + url.search);
    client.reconnect();
});

for (const [button, action] of [["subscribe", "subscribe"], ["unsubscribe", "unsubscribe"]]) {
    $(button).addEventListener("click", () => {
        const channel = $("channel").value.trim();
        if (!CHANNEL_RE.test(channel)) {
            $("form-error").textContent = "A channel is 1 to 64 of A-Z a-z 0-9 _ . : -";
            return;
        }
        $("form-error").textContent = "";
        client[action](channel);
        showChannels();
    });
}

showCounts();
if (token || USER_ID_RE.test(userId)) {
    client.connect();
} else {
    $("form-error").textContent = USER_ID_HELP;
}
